"""The demo's pretraining step (xlm_tiny, 16 x 128 tokens, vocab 3000, no dropout) in fp32 and under bf16
autocast (what --autocast-bf16 does), alternated: CPU time per step and the loss after the same updates.

    .venv/bin/python bench/demo_bf16.py [--steps 60] [--vocab 3000]
"""

import argparse
import statistics
import time

import torch
from fairseq.data import Dictionary

import pretrain_throughput as pt
from fairseq_xlm.models.factory import build_model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="updates per precision (the first 10 untimed)")
    parser.add_argument("--vocab", type=int, default=3000, help="vocabulary size (the demo's VOCAB)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the demo runs one per job)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pt.VOCAB, pt.BATCH, pt.LENGTH = args.vocab, 16, 128
    d = Dictionary()
    for i in range(args.vocab - d.nspecial):
        d.add_symbol(f"w{i}")
    batch = pt.make_batch()
    runs = {}
    for prec in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_model("xlm_tiny", d, ["en", "es"], dropout=0.0, attention_dropout=0.0).train()

        def loss_fn(source, tokens, chosen, langs, model=model):
            logits, _ = model(source, langs=langs, masked_tokens=chosen, padded=False)
            return torch.nn.functional.cross_entropy(logits.float(), tokens[chosen])

        runs[prec] = (model, loss_fn, torch.optim.Adam(model.parameters(), 1e-4), [], [])
    for i in range(args.steps):
        for prec, (model, loss_fn, opt, times, losses) in runs.items():
            start = time.process_time()
            losses.append(pt.train_step(model, loss_fn, opt, batch, prec == "bf16"))
            if i >= 10:
                times.append(time.process_time() - start)
    print(f"demo pretraining step, xlm_tiny, 16x128 tokens, vocab {args.vocab}, {args.threads} thread(s)\n")
    print("| precision | CPU ms / step (median) | loss at step 1 | loss at step %d |" % args.steps)
    print("|---|---:|---:|---:|")
    for prec, (_m, _l, _o, times, losses) in runs.items():
        print(f"| {prec} | {1e3 * statistics.median(times):.1f} | {losses[0]:.4f} | {losses[-1]:.4f} |")


if __name__ == "__main__":
    main()
