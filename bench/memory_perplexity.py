"""MLM on the Bible data with and without a product-key memory layer, at the same training CPU time.

"Same wall time" cannot be measured fairly on a shared machine, so both arms get the same CPU time (user + sys
of the training process): the CPU cost of one update is measured per arm first (the difference between a
--long and a --short run of the same arm, so start-up and validation cancel), then the memory arm gets
``base updates x base cost / memory cost`` updates. Each run is one fairseq-train process on one thread
(OMP_NUM_THREADS=1); the final validation's ``avg_ppl`` (mean over en, es) is reported per seed.

    python bench/memory_perplexity.py DATA_BIN --updates 600 --seeds 1,2,3 --out results.json

DATA_BIN: a two-language (en, es) data-bin of ``python -m fairseq_xlm.cli.prepare`` (see docs/memory-layers.md).
"""

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ["--task", "xlm_pretrain", "--arch", "xlm_tiny", "--criterion", "xlm_lm", "--langs", "en,es",
          "--mlm-steps", "en,es", "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "2e-3",
          "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100", "--batch-size", "16",
          "--tokens-per-sample", "128", "--dropout", "0.1", "--attention-dropout", "0.1", "--cpu",
          "--num-workers", "0", "--log-interval", "100", "--no-save", "--disable-validation"]
# the memory replaces the last layer's FFN (the paper's placement, "--mem_enc_positions 1" for 2 layers):
# 128**2 = 16384 slots of 64 values (1.05 M parameters), 4 heads x 32-dim keys, knn 16
MEMORY = ["--use-memory", "--mem-enc-positions", "1", "--mem-n-keys", "128", "--mem-k-dim", "32",
          "--mem-heads", "4", "--mem-knn", "16"]
ARMS = {"FFN (xlm_tiny)": [], "memory in layer 1": MEMORY}


def train(data: str, extra, updates: int, seed: int, validate: bool):
    """(CPU seconds of the training process, its final avg_ppl or None)."""
    args = [sys.executable, "-m", "fairseq_cli.train", data, "--user-dir", os.path.join(REPO, "fairseq_xlm"),
            *COMMON, "--max-update", str(updates), "--seed", str(seed), *extra]
    if validate:  # fairseq validates once when --max-update stops training
        args.remove("--disable-validation")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(args, env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        sys.exit(out.stdout[-3000:] + out.stderr[-3000:])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    ppl = re.findall(r"\| valid on 'valid' subset .*?\| avg_ppl ([0-9.]+)", out.stdout + out.stderr)
    return cpu, float(ppl[-1]) if ppl else None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data")
    p.add_argument("--updates", type=int, default=600, help="updates of the FFN arm")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--short", type=int, default=10)
    p.add_argument("--long", type=int, default=60)
    p.add_argument("--out", help="write the numbers as JSON here")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    cost = {}
    for name, extra in ARMS.items():  # per-update CPU cost: long minus short run, alternating arms
        short = train(args.data, extra, args.short, 0, False)[0]
        long = train(args.data, extra, args.long, 0, False)[0]
        cost[name] = (long - short) / (args.long - args.short)
        print(f"{name}: {cost[name] * 1000:.1f} ms CPU per update", flush=True)
    base = next(iter(ARMS))
    updates = {name: round(args.updates * cost[base] / cost[name]) for name in ARMS}
    results = {name: [] for name in ARMS}
    for seed in seeds:
        for name, extra in ARMS.items():
            start = time.time()
            cpu, ppl = train(args.data, extra, updates[name], seed, True)
            results[name].append(ppl)
            print(f"seed {seed} {name}: {updates[name]} updates, {cpu:.0f} s CPU, valid ppl {ppl} "
                  f"({time.time() - start:.0f} s wall)", flush=True)
    print("\n| arm | updates | CPU ms/update | " + " | ".join(f"ppl seed {s}" for s in seeds) + " | mean |")
    print("|---|---|---|" + "---|" * len(seeds) + "---|")
    for name in ARMS:
        cells = " | ".join(f"{v:.1f}" for v in results[name])
        print(f"| {name} | {updates[name]} | {cost[name] * 1000:.0f} | {cells} | "
              f"{statistics.mean(results[name]):.1f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"cost_s": cost, "updates": updates, "ppl": results, "seeds": seeds}, f, indent=1)


if __name__ == "__main__":
    main()
