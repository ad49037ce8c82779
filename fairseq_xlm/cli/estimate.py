"""How long a pretraining run would take on this machine's CPU, said before it starts.

``recipes/pretrain.sh`` runs it before a ``SCALE=paper`` run on a CPU (a forgotten ``SCALE=small`` otherwise
builds the paper's model for 500k updates behind a one-line banner):

    python -m fairseq_xlm.cli.estimate --arch xlm_mlm_enfr_1024 --data DATA_BIN --langs 2 \\
        --batch-size 32 --tokens-per-sample 256 --max-update 500000

prints the model's size (parameters counted from the architecture and the data-bin's dictionary), the
updates, and the time: training FLOPs per update (6 x tokens x weights of the matrix products, the MLM output
layer at the predicted 15 %) over the matrix-product speed measured here for a fraction of a second. Real
steps also pay for attention, LayerNorm, dropout and Adam, so the time is a lower bound.
"""

import argparse
import logging
import os
import sys
import time

from . import setup_logging

MLM_PREDICTED = 0.15  # the share of positions whose vocabulary logits MLM computes


def shape(arch: str):
    """(layers, dim, ffn, max positions) of a registered architecture."""
    from fairseq_xlm.models.factory import model_config

    _, cfg = model_config(arch)
    return cfg.encoder_layers, cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim, cfg.max_positions


def parameters(arch: str, vocab: int, n_langs: int) -> int:
    """Parameters of an ``xlm_transformer`` ``arch`` for a dictionary of ``vocab`` symbols and ``n_langs``."""
    layers, dim, ffn, positions = shape(arch)
    per_layer = 4 * (dim * dim + dim) + (dim * ffn + ffn) + (ffn * dim + dim) + 2 * 2 * dim  # attn, FFN, 2 LNs
    embeddings = (vocab + positions + n_langs) * dim + 2 * dim  # tokens, positions, languages, LayerNorm
    return layers * per_layer + embeddings + vocab  # the tied output layer adds its bias only


def update_flops(arch: str, vocab: int, tokens: int) -> float:
    """Training FLOPs (forward + backward) of the matrix products of one update of ``tokens`` tokens."""
    layers, dim, ffn, _ = shape(arch)
    return 6.0 * tokens * (layers * (4 * dim * dim + 2 * dim * ffn) + MLM_PREDICTED * vocab * dim)


def matmul_speed(seconds: float = 0.3, n: int = 512) -> float:
    """FLOP/s of fp32 n x n matrix products on this machine with torch's threads, measured for ``seconds``."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        done += 1
    return 2.0 * n ** 3 * done / (time.perf_counter() - start)


def duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True)
    parser.add_argument("--data", required=True, help="the data-bin (its dict.txt sizes the vocabulary)")
    parser.add_argument("--langs", type=int, required=True, help="number of languages")
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--tokens-per-sample", type=int, required=True)
    parser.add_argument("--max-update", type=int, required=True)
    parser.add_argument("--flops", type=float, default=None, help="FLOP/s to assume instead of measuring (tests)")
    args = parser.parse_args(argv)
    from fairseq_xlm.data import layout

    vocab = len(layout.load_dictionary(args.data.split(os.pathsep)[0]))
    n_params = parameters(args.arch, vocab, args.langs)
    flops = args.flops or matmul_speed()
    per_update = update_flops(args.arch, vocab, args.batch_size * args.tokens_per_sample) / flops
    line = (f"{args.arch}: {n_params / 1e6:.1f}M parameters, {args.max_update} updates of {args.batch_size} x "
            f"{args.tokens_per_sample} tokens: at least {duration(per_update * args.max_update)} on this CPU "
            f"(>= {per_update:.2f} s per update at {flops / 1e9:.0f} GFLOP/s measured)")
    print(line)
    return line


if __name__ == "__main__":
    setup_logging(logging.WARNING, sys.stderr)
    sys.exit(0 if main() else 1)
