"""MLM training-step throughput: fairseq_xlm vs HF transformers' XLMWithLMHeadModel, side by side.

One step = forward, loss, backward and an Adam update on 8 x 256 tokens (15 % predicted, 80/10/10),
vocab 32k, d=512, 6 layers, 8 heads, FFN 2048, fp32 on CPU, dropout 0.1. Both models use the same
torch.optim.Adam (fused). Steps alternate between the two models so machine noise hits both alike; the table
reports median tokens/s, the ratio, and the share of this machine's measured fp32 matmul peak that
each model's useful FLOPs reach.

    .venv/bin/python bench/pretrain_throughput.py [--steps 6] [--threads 2]
"""

import argparse
import statistics
import time

import torch
from fairseq.data import Dictionary

import fairseq_xlm  # noqa: F401
from fairseq_xlm.models.factory import build_model

VOCAB, DIM, LAYERS, HEADS, FFN, BATCH, LENGTH, P = 32000, 512, 6, 8, 2048, 8, 256, 0.15


def matmul_peak_gflops(n=2048, reps=5, rounds=5) -> float:
    """Best of several rounds of square fp32 matmuls: this machine's attainable fp32 FLOP rate."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


def step_flops(predicted: int, full_logits: bool) -> float:
    """Useful FLOPs of one training step (matmuls; backward = 2x forward)."""
    tokens = BATCH * LENGTH
    per_token = LAYERS * (4 * DIM * DIM + 2 * DIM * FFN + 2 * LENGTH * DIM)
    out_rows = tokens if full_logits else predicted
    return 3 * 2 * (tokens * per_token + out_rows * VOCAB * DIM)


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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model (after 2 warm-up steps)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peak_before = matmul_peak_gflops()
    batch = make_batch()
    runs = {}
    for name, factory in (("fairseq_xlm", ours), ("HF XLMWithLMHeadModel", hf)):
        model, loss_fn = factory()
        runs[name] = (model, loss_fn, torch.optim.Adam(model.parameters(), lr=1e-4, fused=True), [])

    def step(model, loss_fn, opt):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(*batch)
        loss.backward()
        opt.step()
        return float(loss)

    for _ in range(2):
        for model, loss_fn, opt, _times in runs.values():
            step(model, loss_fn, opt)
    for _ in range(args.steps):
        for model, loss_fn, opt, times in runs.values():
            start = time.perf_counter()
            step(model, loss_fn, opt)
            times.append(time.perf_counter() - start)

    peak = max(matmul_peak_gflops(), peak_before)
    tokens = BATCH * LENGTH
    predicted = int(batch[2].sum())
    print(f"MLM step, {BATCH}x{LENGTH} tokens ({predicted} predicted), vocab {VOCAB}, d={DIM}, {LAYERS} layers, "
          f"{HEADS} heads, fp32, {torch.get_num_threads()} threads; fp32 matmul peak {peak:.1f} GFLOP/s\n")
    print("| model | step (s, median) | tokens/s | vs HF | GFLOP per step | GFLOP/s | share of matmul peak |")
    print("|---|---|---|---|---|---|---|")
    hf_rate = tokens / statistics.median(runs["HF XLMWithLMHeadModel"][3])
    flops = {"fairseq_xlm": step_flops(predicted, full_logits=False),
             "HF XLMWithLMHeadModel": step_flops(predicted, full_logits=True)}  # HF scores every position
    for name, (_m, _l, _o, times) in runs.items():
        t = statistics.median(times)
        rate = flops[name] / t / 1e9
        print(f"| {name} | {t:.3f} | {tokens / t:,.0f} | {tokens / t / hf_rate:.2f}x | {flops[name] / 1e9:.0f} | "
              f"{rate:.1f} | {100 * rate / peak:.0f}% |")
    bound = flops["HF XLMWithLMHeadModel"] / flops["fairseq_xlm"]
    print(f"\nIf both ran at the same FLOP rate, fairseq_xlm would be {bound:.2f}x HF: predicting only masked "
          f"positions removes {100 * (1 - 1 / bound):.0f}% of HF's matmul work; the rest of the ratio is efficiency.")


if __name__ == "__main__":
    main()
