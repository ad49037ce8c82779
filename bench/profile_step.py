"""Where the time of fairseq_xlm's MLM training step goes: torch.profiler's self CPU time, by kind of work.

The step is bench/pretrain_throughput.py's (same model, batch and fused Adam). Each op's self time is
attributed to the first category that its own name or an enclosing autograd node / optimizer call matches
(e.g. the fill_ inside the embedding's backward counts as "embedding backward"), so the shares add to 100 %.

    .venv/bin/python bench/profile_step.py --threads 1            # fp32; --bf16 for bf16 autocast
"""

import argparse
import collections
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pretrain_throughput as pt  # noqa: E402  (the bench's model, batch and step)

# (category, substrings of an enclosing event's name), checked outermost-specific first
BY_ANCESTOR = [
    ("Adam (fused)", ("Optimizer.step",)),
    ("zero_grad", ("Optimizer.zero_grad",)),
    ("embedding backward", ("EmbeddingBackward",)),
    ("cross-entropy", ("NllLoss", "LogSoftmax", "cross_entropy")),
    ("rows of predicted positions", ("IndexSelectBackward", "IndexBackward", "aten::index_select", "aten::nonzero",
                                     "aten::index")),
    ("LayerNorm", ("layer_norm",)),
    ("GELU", ("gelu",)),
    ("softmax", ("aten::_softmax", "SoftmaxBackward")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm")),
    ("dropout masks (draw, compare)", ("aten::random_", "aten::lt", "aten::ge", "masked_fill", "MaskedFillBackward")),
    ("products (dropout keep, scaling)", ("aten::mul",)),
    ("casts (autocast)", ("aten::_to_copy", "ToCopyBackward")),
    ("copies (contiguous, clone)", ("aten::copy_", "aten::clone", "aten::contiguous")),
    ("adds (residual, gradient sums)", ("aten::add",)),
    ("bias gradients (sum)", ("aten::sum",)),
    ("fills (zeros)", ("aten::fill_", "aten::zero_")),
]


def category(event) -> str:
    names = []
    while event is not None:
        names.append(event.name)
        event = event.cpu_parent
    for label, keys in BY_ANCESTOR:
        if any(key in name for name in names for key in keys):
            return label
    return "other (" + names[0] + ")"


def profile_step(bf16: bool, steps: int):
    torch.manual_seed(0)
    batch = pt.make_batch()
    model, loss_fn = pt.ours()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    for _ in range(2):
        pt.train_step(model, loss_fn, opt, batch, bf16)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            pt.train_step(model, loss_fn, opt, batch, bf16)
    shares = collections.Counter()
    for event in prof.events():
        shares[category(event)] += event.self_cpu_time_total
    return shares


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--bf16", action="store_true", help="under bf16 autocast")
    parser.add_argument("--steps", type=int, default=2, help="profiled steps (after 2 warm-up steps)")
    parser.add_argument("--top", type=int, default=16, help="rows printed (the rest summed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shares = profile_step(args.bf16, args.steps)
    total = sum(shares.values())
    print(f"fairseq_xlm MLM step ({'bf16 autocast' if args.bf16 else 'fp32'}, {args.threads} threads), "
          f"self CPU time {total / 1e6 / args.steps:.2f} s per step (profiler on)\n")
    print("| work | ms per step | share |\n|---|---:|---:|")
    rows = shares.most_common()
    rest = sum(t for _, t in rows[args.top:])
    for label, t in rows[: args.top] + ([("everything else", rest)] if rest else []):
        print(f"| {label} | {t / 1e3 / args.steps:,.1f} | {100 * t / total:.1f} % |")
    non_mm = total - shares["matmul"]
    print(f"\nnon-matmul share: {100 * non_mm / total:.1f} %")


if __name__ == "__main__":
    main()
