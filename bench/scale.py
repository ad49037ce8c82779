"""Start-up cost of the pretraining data path as the corpus grows: synthetic data-bins in our layout, measured
with ``fairseq-train --task xlm_pretrain --arch xlm_tiny``.

Each point is a data-bin of Zipf-sized languages (language k holds a share ∝ 1/k of the sentences; sentence
lengths uniform in 5..62 tokens with their ``</s>``, mean 34, uint16 tokens; pairs 5..39 tokens a side). The
``.idx`` files are real (sizes and pointers of every sentence, what fairseq's loader reads); the ``.bin`` files are
sparse (all tokens 0, no disk used): the data path reads a ``.bin`` only where a batch lands. Each folder
gets the ``manifest.json`` that prepare writes (``cli.verify --write-manifest``; built once, with the data);
``--no-manifest`` measures a plain fairseq-preprocess data-bin instead, whose every index and token is read once
at load (the check that stands in for a manifest). Per point:

  * to first update   a whole ``fairseq-train --max-update 1`` process, start to exit (imports, model,
                      data, the first update; no checkpoint, no validation)
  * load_dataset      ``task.load_dataset("train")`` in a process that only builds data
  * epoch batch build the training iterator: ``get_batch_iterator``, its length and its first batch
  * peak RSS          of the training process / of the data-only process (its baseline after imports in
                      parentheses: torch and fairseq alone)
  * steady data RSS   the data-only process after walking 2,000 batches of the epoch (every step has drawn
                      its first pass by then), and the time of that walk

A sharded row reads a data path of N shards (``dir0:dir1:...``); its shards are the 25.7 M-sentence point's
folder under N names (symlinks), which is all the first epoch reads: memory follows the shard, not the corpus.

    .venv/bin/python bench/scale.py [--points 2x1.5M,15x3.7M,100x25.7M,100x257M,100x257M/10] [--work DIR]
    .venv/bin/python bench/scale.py --code .,../main   # alternate with another checkout, point by point

The last lines print the slope of data-only RSS and load time per sentence (least squares over the
unsharded points).
"""

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import time

T0 = time.perf_counter()

import numpy as np  # noqa: E402

POINTS = {  # name: (languages, monolingual sentences, parallel pairs, shards)
    "2x1.5M": (2, 1_500_000, 0, 1),
    "15x3.7M": (15, 3_700_000, 1_400_000, 1),
    "100x25.7M": (100, 25_700_000, 0, 1),
    "100x257M": (100, 257_000_000, 0, 1),
    "100x257M/10": (100, 25_700_000, 0, 10),
    "100x2.57B/100": (100, 25_700_000, 0, 100),
}
MAGIC = b"MMIDIDX\x00\x00"
VOCAB = 8000
CHUNK = 10_000_000


def langs_of(n: int):
    return [f"l{i:02d}" for i in range(n)]


def write_text(prefix: str, sentences: int, rng, low: int, high: int) -> int:
    """A real .idx (sizes, pointers) and a sparse .bin of ``sentences`` uint16 sentences; returns tokens."""
    if os.path.exists(prefix + ".idx"):
        return os.path.getsize(prefix + ".bin") // 2
    tmp = prefix + ".idx.tmp"
    sizes_path = prefix + ".sizes.tmp"
    tokens = 0
    with open(tmp, "wb") as idx, open(sizes_path, "w+b") as side:
        idx.write(MAGIC + struct.pack("<QBQ", 1, 8, sentences))  # dtype code 8: uint16
        for start in range(0, sentences, CHUNK):
            sizes = rng.integers(low, high, min(CHUNK, sentences - start), dtype=np.int32)
            idx.write(sizes.tobytes())
            pointers = (tokens + np.concatenate([[0], np.cumsum(sizes[:-1], dtype=np.int64)])) * 2
            side.write(pointers.astype(np.int64).tobytes())
            tokens += int(sizes.sum(dtype=np.int64))
        side.seek(0)
        while True:
            block = side.read(1 << 26)
            if not block:
                break
            idx.write(block)
    os.remove(sizes_path)
    with open(prefix + ".bin", "wb") as f:
        f.truncate(2 * tokens)
    os.replace(tmp, prefix + ".idx")
    return tokens


def build(name: str, work: str) -> str:
    """The data path of a point (built once; a sharded point reuses the 25.7 M point's folder)."""
    n_langs, sentences, pairs, shards = POINTS[name]
    if shards > 1:
        base = build("100x25.7M", work)
        links = []
        for i in range(shards):
            link = os.path.join(work, f"shard-{i}")
            if not os.path.islink(link):
                os.symlink(os.path.abspath(base), link)
            links.append(link)
        return os.pathsep.join(links)
    folder = os.path.join(work, name)
    done = os.path.join(folder, "DONE")
    if os.path.exists(done):
        write_manifest(folder)
        return folder
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "dict.txt"), "w") as f:
        f.writelines(f"t{i} 1\n" for i in range(VOCAB))
    rng = np.random.default_rng(0)
    langs = langs_of(n_langs)
    share = 1.0 / np.arange(1, n_langs + 1)
    counts = np.maximum(1000, np.floor(sentences * share / share.sum())).astype(np.int64)
    tokens = sum(write_text(os.path.join(folder, f"train.{lang}"), int(c), rng, 5, 63)
                 for lang, c in zip(langs, counts))
    for l2 in langs[1:] if pairs else []:
        for lang in (langs[0], l2):
            tokens += write_text(os.path.join(folder, f"train.{langs[0]}-{l2}.{lang}"), pairs // (n_langs - 1),
                                 np.random.default_rng(int(l2[1:])), 5, 40)
    with open(done, "w") as f:
        json.dump({"sentences": int(counts.sum()), "pairs": pairs, "tokens": tokens}, f)
    write_manifest(folder)
    return folder


def write_manifest(folder: str) -> None:
    """The manifest.json prepare would write (sizes, sha256, largest id): with it a task's load reads index
    headers only; without one it reads every index and token once (``--no-manifest`` measures that)."""
    if not os.path.exists(os.path.join(folder, "manifest.json")):
        from fairseq_xlm.cli import verify

        verify.write_manifest(folder)


def drop_manifest(data: str) -> None:
    for folder in dict.fromkeys(data.split(os.pathsep)):
        path = os.path.join(folder, "manifest.json")
        if os.path.exists(path):
            os.remove(path)


def train_args(data: str, n_langs: int, pairs: int, user_dir: str):
    langs = langs_of(n_langs)
    steps = langs + ([f"{langs[0]}-{l2}" for l2 in langs[1:]] if pairs else [])
    return [data, "--user-dir", user_dir, "--task", "xlm_pretrain", "--arch", "xlm_tiny", "--criterion", "xlm_lm",
            "--langs", ",".join(langs), "--mlm-steps", ",".join(steps), "--tokens-per-sample", "256",
            "--batch-size", "32", "--epoch-size", "300000", "--optimizer", "adam", "--lr", "1e-4", "--cpu",
            "--num-workers", "0", "--max-update", "1", "--no-save", "--disable-validation", "--seed", "1",
            "--log-format", "simple", "--save-dir", os.path.join(os.path.dirname(data.split(os.pathsep)[0]), "ckpt")]


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def child_data(argv):
    """Data only: the task, load_dataset, the training iterator; prints one JSON line."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import fairseq_xlm  # noqa: F401

    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    base = rss_gib()
    task = tasks.setup_task(cfg.task)
    t = time.perf_counter()
    task.load_dataset("train", epoch=1)
    load = time.perf_counter() - t
    t = time.perf_counter()
    itr = task.get_batch_iterator(task.dataset("train"), max_sentences=32, seed=1, epoch=1)
    n = len(itr)
    first = itr.first_batch
    build_s = time.perf_counter() - t
    rss = rss_gib()
    # steady state: walk 2000 batches of the schedule (every step has drawn its first pass by then)
    t = time.perf_counter()
    walk = itr.rank_batches(1) if hasattr(itr, "rank_batches") else itr.frozen_batches
    walked = sum(1 for _, _ in zip(range(2000), walk))
    print(json.dumps({"load": load, "epoch": build_s, "batches": n, "first": int(first["nsentences"]),
                      "rss": rss, "base": base, "walked": walked, "walk_s": time.perf_counter() - t,
                      "steady": rss_gib()}))


def child_train(argv):
    from fairseq_cli import train

    sys.argv = ["fairseq-train"] + argv
    train.cli_main()
    print(json.dumps({"wall": time.perf_counter() - T0, "rss": rss_gib()}))


def run_child(mode: str, argv, code: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=code)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode, "--", *argv], env=env,
                         capture_output=True, text=True)
    if out.returncode:  # a row of its own (the data path before shards failed on dir0:dir1)
        lines = (out.stderr or out.stdout).strip().splitlines() or ["no output"]
        return {"error": lines[-1][:150]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", default="2x1.5M,15x3.7M,100x25.7M,100x257M,100x257M/10,100x2.57B/100")
    parser.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "fairseq_xlm_scale"))
    parser.add_argument("--code", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        help="comma-separated checkouts to measure, alternated point by point (each one's "
                             "fairseq_xlm is the --user-dir)")
    parser.add_argument("--no-manifest", action="store_true",
                        help="measure data-bins without manifest.json (a plain fairseq-preprocess output): every "
                             "split's index and tokens are read once at load")
    parser.add_argument("--child", choices=["data", "train"], help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        return (child_data if args.child == "data" else child_train)([a for a in rest if a != "--"])
    unknown = [p for p in args.points.split(",") if p not in POINTS]
    if unknown:
        raise SystemExit(f"--points: unknown {unknown}; choose from {', '.join(POINTS)}")
    os.makedirs(args.work, exist_ok=True)
    codes = [os.path.abspath(c) for c in args.code.split(",")]
    print("| code | point | langs / steps | sentences | tokens | to first update | epoch batch build | load_dataset "
          "| peak RSS train / data (baseline), GiB | steady data RSS, 2000-batch walk |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|---|")
    fit = []
    for name in args.points.split(","):
        n_langs, _, pairs, shards = POINTS[name]
        data = build(name, args.work)
        if args.no_manifest:
            drop_manifest(data)
        with open(os.path.join(data.split(os.pathsep)[0], "DONE")) as f:
            info = json.load(f)
        for code in codes:
            argv = train_args(data, n_langs, pairs, os.path.join(code, "fairseq_xlm"))
            d = run_child("data", argv, code)
            t = run_child("train", argv, code) if "error" not in d else d
            if "error" in d:
                print(f"| {os.path.basename(code)} | {name} | fails: {d['error']} |", flush=True)
                continue
            steps = n_langs + (n_langs - 1 if pairs else 0)
            sentences = info["sentences"] * shards
            pair_text = f" + {pairs * shards / 1e6:.1f} M pairs" if pairs else ""
            print(f"| {os.path.basename(code)} | {name} | {n_langs} / {steps} | {sentences / 1e6:.1f} M{pair_text} | "
                  f"{info['tokens'] * shards / 1e9:.2f} B | {t['wall']:.1f} s | {d['epoch']:.2f} s | "
                  f"{d['load']:.2f} s | {t['rss']:.2f} / {d['rss']:.2f} ({d['base']:.2f}) | "
                  f"{d['steady']:.2f} GiB, {d['walk_s']:.1f} s |", flush=True)
            if shards == 1 and code == codes[0]:
                fit.append((info["sentences"] + pairs, d["rss"], d["load"]))
    if len(fit) >= 2:
        x = np.array([f[0] for f in fit], dtype=np.float64)
        rss_slope = np.polyfit(x, np.array([f[1] for f in fit]) * 2**30, 1)[0]
        load_slope = np.polyfit(x, np.array([f[2] for f in fit]), 1)[0]
        print(f"\nslope over unsharded points of {os.path.basename(codes[0])}: {rss_slope:.2f} bytes of data-only "
              f"RSS and {load_slope * 1e9:.2f} ns of load_dataset per sentence")


if __name__ == "__main__":
    main()
