"""MLM training-step throughput and memory: fairseq_xlm vs the authors' XLM and HF's XLMWithLMHeadModel.

One step = forward, loss, backward and an Adam update on 8 x 256 tokens (15 % predicted, 80/10/10),
vocab 32k, d=512, 6 layers, 8 heads, FFN 2048, dropout 0.1, on CPU; fp32 and (``--bf16``) bf16 autocast
with fp32 weights. Every model uses the same torch.optim.Adam (fused). Steps alternate between all runs so
machine noise hits them alike; the table reports median tokens/s, ratios to HF and to the authors in the
same precision, the share of this machine's measured matmul peak (of that precision) that the useful FLOPs
reach, and the peak memory of a training step (each run alone in a fresh process: peak RSS above the
process before the model was built, so weights + Adam state + the step's activations and gradients).
The authors' row needs their code (``--xlm-src``, default ``../shared/anchors/xlm-authors``) and is left
out, with a note, without it; the authors' model, as ours, computes logits at predicted positions only.

    .venv/bin/python bench/pretrain_throughput.py --bf16        # the README table
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from argparse import Namespace

import torch
from fairseq.data import Dictionary

import fairseq_xlm  # noqa: F401
from fairseq_xlm.models.factory import build_model

VOCAB, DIM, LAYERS, HEADS, FFN, BATCH, LENGTH, P = 32000, 512, 6, 8, 2048, 8, 256, 0.15


XLM_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "anchors", "xlm-authors")


def matmul_peak_gflops(n=2048, reps=5, rounds=5, dtype=torch.float32, clock=time.perf_counter) -> float:
    """Best of several rounds of square matmuls: this machine's attainable FLOP rate in ``dtype`` (per
    second of ``clock``: wall time, or CPU time as the steps with --cpu-time)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = 0.0
    for _ in range(rounds):
        start = clock()
        for _ in range(reps):
            torch.mm(a, b)
        best = max(best, 2 * n**3 * reps / (clock() - start) / 1e9)
    return best


def step_flops(predicted: int, full_logits: bool, slots: int = 0) -> float:
    """Matmul FLOPs of one training step as a model computes it (backward = 2x forward).

    ``full_logits``: the output layer at every position (HF); ``slots`` > 0: the last layer's queries,
    attention, output projection and FFN only at predicted positions, attention over ``slots`` packed query
    rows (fairseq_xlm: ``BATCH`` x the most predicted positions of one sentence; keys and values at all)."""
    tokens = BATCH * LENGTH
    per_token = LAYERS * (4 * DIM * DIM + 2 * DIM * FFN + 2 * LENGTH * DIM)
    skipped = 0
    if slots:
        skipped = (tokens - predicted) * (2 * DIM * DIM + 2 * DIM * FFN) + (tokens - slots) * 2 * LENGTH * DIM
    out_rows = tokens if full_logits else predicted
    return 3 * 2 * (tokens * per_token - skipped + out_rows * VOCAB * DIM)


def make_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(14, VOCAB, (BATCH, LENGTH), generator=g)
    chosen = torch.rand(BATCH, LENGTH, generator=g) < P
    source = tokens.clone()
    u = torch.rand(BATCH, LENGTH, generator=g)
    source[chosen & (u < 0.8)] = 5  # the mask symbol in both vocabularies' layout here
    rand = chosen & (u >= 0.9)
    source[rand] = torch.randint(14, VOCAB, (int(rand.sum()),), generator=g)
    langs = torch.zeros(BATCH, LENGTH, dtype=torch.long)
    return source, tokens, chosen, langs


def ours():
    d = Dictionary()
    for i in range(VOCAB - d.nspecial):
        d.add_symbol(f"w{i}")
    model = build_model("xlm_tiny", d, ["en", "fr"], encoder_embed_dim=DIM, encoder_layers=LAYERS,
                        encoder_attention_heads=HEADS, encoder_ffn_embed_dim=FFN).train()

    def loss_fn(source, tokens, chosen, langs):
        logits, _ = model(source, langs=langs, masked_tokens=chosen)
        return torch.nn.functional.cross_entropy(logits, tokens[chosen])

    return model, loss_fn


def hf():
    from transformers import XLMConfig, XLMWithLMHeadModel

    cfg = XLMConfig(vocab_size=VOCAB, emb_dim=DIM, n_layers=LAYERS, n_heads=HEADS, n_langs=2, dropout=0.1,
                    attention_dropout=0.1, gelu_activation=True, max_position_embeddings=512)
    model = XLMWithLMHeadModel(cfg).train()

    def loss_fn(source, tokens, chosen, langs):
        labels = tokens.masked_fill(~chosen, -100)
        return model(input_ids=source, langs=langs, labels=labels).loss

    return model, loss_fn


def authors(xlm_src=XLM_SRC):
    """The authors' TransformerModel (their code, imported from ``xlm_src``) with the same step."""
    sys.path.insert(0, os.path.abspath(xlm_src))
    from xlm.model.transformer import TransformerModel

    p = Namespace(n_words=VOCAB, eos_index=1, pad_index=2, emb_dim=DIM, n_layers=LAYERS, n_heads=HEADS,
                  dropout=0.1, attention_dropout=0.1, gelu_activation=True, share_inout_emb=True,
                  sinusoidal_embeddings=False, use_lang_emb=True, n_langs=2, asm=False, use_memory=False,
                  mem_enc_positions=[], mem_dec_positions=[], id2lang={0: "en", 1: "fr"},
                  lang2id={"en": 0, "fr": 1})
    model = TransformerModel(p, [None] * VOCAB, is_encoder=True, with_output=True).train()
    lengths = torch.full((BATCH,), LENGTH, dtype=torch.long)

    def loss_fn(source, tokens, chosen, langs):  # their layout is (T, B)
        h = model("fwd", x=source.t().contiguous(), lengths=lengths, langs=langs.t().contiguous(), causal=False)
        mask = chosen.t().contiguous()
        return model("predict", tensor=h, pred_mask=mask, y=tokens.t().contiguous()[mask], get_scores=False)[1]

    return model, loss_fn


SYSTEMS = {"fairseq_xlm": ours, "authors' XLM": authors, "HF XLMWithLMHeadModel": hf}
FULL_LOGITS = {"HF XLMWithLMHeadModel"}  # HF scores every position


def native_bf16() -> bool:
    """bf16 matmuls in hardware (avx512_bf16 / amx_bf16); emulated ones are ~100x slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def train_step(model, loss_fn, opt, batch, bf16: bool) -> float:
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = loss_fn(*batch)
    loss.backward()
    opt.step()
    return float(loss.detach())


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: reset by exec, unlike getrusage's ru_maxrss, which Linux keeps from
    the parent that forked it)."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def peak_memory_child(name: str, bf16: bool, xlm_src: str) -> None:
    """In a fresh process: build one system, run 2 steps, print its peak RSS above the start (MB)."""
    batch = make_batch()
    factory = SYSTEMS[name]
    before = rss_mb()
    model, loss_fn = factory(xlm_src) if factory is authors else factory()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    for _ in range(2):
        train_step(model, loss_fn, opt, batch, bf16)
    print(peak_rss_mb() - before)


def peak_memory(name: str, bf16: bool, args) -> float:
    cmd = [sys.executable, os.path.abspath(__file__), "--peak-memory-of", name, "--xlm-src", args.xlm_src]
    cmd += ["--bf16"] if bf16 else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per run (after 2 warm-up steps)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--bf16", action="store_true", help="also bf16 autocast runs (CPUs with native bf16)")
    parser.add_argument("--xlm-src", default=XLM_SRC, help="the authors' code (a folder holding xlm/)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory column")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time steps by this process's CPU time (use with --threads 1 on a shared machine)")
    parser.add_argument("--peak-memory-of", choices=sorted(SYSTEMS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak_memory_of:
        return peak_memory_child(args.peak_memory_of, args.bf16, args.xlm_src)
    notes = []
    if args.bf16 and not native_bf16():
        notes.append("bf16 left out: this CPU has no native bf16 (avx512_bf16/amx_bf16)")
        args.bf16 = False
    systems = dict(SYSTEMS)
    if not os.path.isdir(os.path.join(args.xlm_src, "xlm")):
        notes.append(f"authors' row left out: no xlm/ under {args.xlm_src}")
        del systems["authors' XLM"]
    torch.manual_seed(0)
    clock = time.process_time if args.cpu_time else time.perf_counter
    precisions = ["fp32", "bf16"] if args.bf16 else ["fp32"]
    peaks = {"fp32": matmul_peak_gflops(clock=clock)}
    if args.bf16:
        peaks["bf16"] = matmul_peak_gflops(dtype=torch.bfloat16, clock=clock)
    batch = make_batch()
    runs = {}
    for name, factory in systems.items():
        for prec in precisions:
            model, loss_fn = factory(args.xlm_src) if factory is authors else factory()
            runs[name, prec] = (model, loss_fn, torch.optim.Adam(model.parameters(), lr=1e-4, fused=True), [])
    for _ in range(2):
        for (_name, prec), (model, loss_fn, opt, _times) in runs.items():
            train_step(model, loss_fn, opt, batch, prec == "bf16")
    for _ in range(args.steps):
        for (_name, prec), (model, loss_fn, opt, times) in runs.items():
            start = clock()
            train_step(model, loss_fn, opt, batch, prec == "bf16")
            times.append(clock() - start)
    peaks["fp32"] = max(peaks["fp32"], matmul_peak_gflops(clock=clock))
    if args.bf16:
        peaks["bf16"] = max(peaks["bf16"], matmul_peak_gflops(dtype=torch.bfloat16, clock=clock))
    memory = {key: None if args.no_memory else peak_memory(key[0], key[1] == "bf16", args) for key in runs}

    tokens = BATCH * LENGTH
    predicted = int(batch[2].sum())
    slots = BATCH * int(batch[2].sum(1).max())  # fairseq_xlm's packed query rows in its last layer
    med = {key: statistics.median(r[3]) for key, r in runs.items()}
    print(f"MLM step, {BATCH}x{LENGTH} tokens ({predicted} predicted), vocab {VOCAB}, d={DIM}, {LAYERS} layers, "
          f"{HEADS} heads, dropout 0.1, {torch.get_num_threads()} threads, median of {args.steps} alternated steps "
          f"({'CPU' if args.cpu_time else 'wall'} time); "
          + ", ".join(f"{p} matmul peak {g:.0f} GFLOP/s" for p, g in peaks.items()) + "\n")
    print("| model | precision | step (s) | tokens/s | vs HF | vs authors | GFLOP per step | share of matmul peak "
          "| peak step memory (MB) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (name, prec), t in med.items():
        flops = step_flops(predicted, full_logits=name in FULL_LOGITS, slots=slots if name == "fairseq_xlm" else 0)
        hf_t, au_t = med.get(("HF XLMWithLMHeadModel", prec)), med.get(("authors' XLM", prec))
        mem = memory[name, prec]
        print(f"| {name} | {prec}{' autocast' if prec == 'bf16' else ''} | {t:.3f} | {tokens / t:,.0f} | "
              f"{hf_t / t:.2f}x | {'-' if au_t is None else f'{au_t / t:.2f}x'} | {flops / 1e9:.0f} | "
              f"{100 * flops / t / 1e9 / peaks[prec]:.0f} % | {'-' if mem is None else f'{mem:,.0f}'} |")
    ours_flops = step_flops(predicted, False, slots)
    bound = step_flops(predicted, True) / ours_flops
    print(f"\nAt equal FLOP rates fairseq_xlm would be {bound:.2f}x HF and "
          f"{step_flops(predicted, False) / ours_flops:.2f}x the authors: computing the "
          f"output layer (and our last layer's per-position work) only at predicted positions removes "
          f"{100 * (1 - 1 / bound):.0f}% of HF's matmul work; the rest of each ratio is efficiency.")
    hf_rate = tokens / med[("HF XLMWithLMHeadModel", "fp32")]
    ceiling = tokens * peaks["fp32"] * 1e9 / ours_flops
    print(f"At this machine's fp32 matmul peak ({peaks['fp32']:.0f} GFLOP/s, every op of the step as fast as the "
          f"square matmul) fairseq_xlm's {ours_flops / 1e9:.0f} GFLOP would take {ours_flops / peaks['fp32'] / 1e9:.3f} "
          f"s: {ceiling:,.0f} tokens/s, {ceiling / hf_rate:.2f}x HF's measured fp32 rate.")
    for note in notes:
        print(f"Note: {note}.")


if __name__ == "__main__":
    main()
