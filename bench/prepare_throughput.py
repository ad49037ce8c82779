"""Data preparation throughput: ``prepare``'s BPE + binarize (stages encode, dict, binarize) next to plain
``fairseq-preprocess`` on the same text already split into BPE pieces, with 1 and 2 workers.

    .venv/bin/python bench/prepare_throughput.py [--repeat 3 --workers 1,2 --rounds 1 --text-path]

Data: the real Bible corpus (../shared/data/bible.en-es-ny.tsv.gz): train.{en,es,ny} = every non-empty verse
of that language, the whole set repeated --repeat times (3: ~286k sentences, ~128 characters a line), and
valid/test = its first 500 verses (prepare requires them; they are counted). The sentencepiece model
(--vocab-size 8000) and, for fairseq-preprocess, the piece text and dict.txt are made once beforehand and not
timed. Each measurement runs alone in a fresh process (rows alternate; --rounds > 1 repeats them, best kept)
and reports:

  * sentences/s          wall clock, the work only (no imports)
  * per CPU-second       sentences / (user + sys CPU time of the process and its worker processes): the
                         per-core throughput, which a shared machine disturbs far less than wall time
  * peak RSS             the largest resident set of the process and of any worker process it waited for
                         (imports of torch and fairseq included), and its rise over the process's resident
                         set when the work started (what the work itself holds)

``--text-path`` adds the path ``prepare`` used before it worked on ids (pieces written as text, counted with
str.split, binarized by fairseq-preprocess): encode + dict + binarize of that path.
"""

import argparse
import csv
import gzip
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TSV = REPO.parent / "shared" / "data" / "bible.en-es-ny.tsv.gz"
LANGS = ("en", "es", "ny")
SYSTEMS = {"ours": "prepare (spm ids: encode + dict + binarize)",
           "fairseq": "fairseq-preprocess on piece text (binarize only)",
           "text": "prepare before (piece text: encode + dict + fairseq-preprocess)"}


def make_raw(raw: Path, repeat: int) -> int:
    """Write the benchmark's raw text; returns its number of lines (all splits)."""
    raw.mkdir(parents=True)
    columns = {lang: [] for lang in LANGS}
    with gzip.open(TSV, "rt", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows)
        for row in rows:
            for lang in LANGS:
                if row[header.index(lang)].strip():
                    columns[lang].append(row[header.index(lang)])
    total = 0
    for lang, verses in columns.items():
        text = "".join(v + "\n" for v in verses)
        (raw / f"train.{lang}").write_text(text * repeat, encoding="utf-8")
        head = "".join(v + "\n" for v in verses[:500])
        for split in ("valid", "test"):
            (raw / f"{split}.{lang}").write_text(head, encoding="utf-8")
        total += len(verses) * repeat + 1000
    return total


def setup(work: Path, repeat: int, vocab: int) -> int:
    """Raw text, spm.model (prepare up to its spm stage), piece text and dict.txt for fairseq-preprocess."""
    from fairseq_xlm.cli import prepare, prepare_ids, prepare_stages
    from fairseq_xlm.cli.prepare_authors import encode_text

    lines = make_raw(work / "raw", repeat)
    base = work / "base"
    prepare.main(["--raw", str(work / "raw"), "--destdir", str(base), "--langs", ",".join(LANGS),
                  "--vocab-size", str(vocab), "--sample-lines", "100000"])
    cfg = _cfg(work, base)
    encode_text(cfg, prepare_stages.raw_inventory(cfg, list(LANGS)), str(base / "prep"))  # -> base/prep/bpe
    shutil.rmtree(base / "prep" / prepare_ids.IDS)
    return lines


def _cfg(work: Path, dest: Path, workers: int = 1):
    from fairseq_xlm.cli.prepare_stages import PrepareConfig

    return PrepareConfig(raw=str(work / "raw"), destdir=str(dest), langs=",".join(LANGS), workers=workers)


def measure_one(work: Path, system: str, workers: int) -> dict:
    """Run one system once in this (fresh) process; the data-bin goes to a new folder, removed after."""
    from fairseq_xlm.cli import prepare_ids, prepare_stages
    from fairseq_xlm.cli.prepare_authors import binarize_text, encode_text

    dest = work / f"run-{system}-{workers}"
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "prep").mkdir(parents=True)
    for name in ("spm.model", "spm.vocab") + (("dict.txt",) if system == "fairseq" else ()):
        shutil.copy(work / "base" / name, dest / name)
    if system == "fairseq":
        shutil.copytree(work / "base" / "prep" / "bpe", dest / "prep" / "bpe")
    cfg = _cfg(work, dest, workers)
    corpora = prepare_stages.raw_inventory(cfg, list(LANGS))
    prep = str(dest / "prep")
    start_rss = _status_mib("VmRSS")
    t0, c0 = time.perf_counter(), os.times()
    if system == "ours":
        prepare_ids.encode(cfg, corpora, prep)
        prepare_ids.build_dict(cfg, corpora, prep)
        prepare_ids.binarize(cfg, corpora, prep)
    elif system == "fairseq":
        binarize_text(cfg, corpora, prep)
    else:
        encode_text(cfg, corpora, prep)
        _text_dict(dest, corpora)
        binarize_text(cfg, corpora, prep)
    wall, c1 = time.perf_counter() - t0, os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system) + (c1.children_user - c0.children_user) + (
        c1.children_system - c0.children_system)
    # VmHWM, not RUSAGE_SELF: Linux carries ru_maxrss across exec, so that would be the bench's own peak
    rss = max(_status_mib("VmHWM"), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    rise = rss - start_rss
    sha = {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(dest.glob("*.[bi][in][nx]"))}
    shutil.rmtree(dest)
    return {"wall": wall, "cpu": cpu, "rss_mib": rss, "rise_mib": rise, "sizes": sha}


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def _text_dict(dest: Path, corpora) -> None:
    """The former dict stage: str.split counts of the piece text into fairseq's Dictionary."""
    from collections import Counter

    import sentencepiece as spm
    from fairseq.data import Dictionary

    from fairseq_xlm.cli.prepare_stages import RESERVED

    counts = Counter()
    for name, files in corpora.items():
        for file in files if name.startswith("train.") else []:
            with open(dest / "prep" / "bpe" / file, encoding="utf-8") as f:
                for line in f:
                    counts.update(line.split())
    sp = spm.SentencePieceProcessor(model_file=str(dest / "spm.model"))
    d = Dictionary()
    for i in range(sp.get_piece_size()):
        if not (sp.is_control(i) or sp.is_unknown(i) or sp.id_to_piece(i) in RESERVED):
            d.add_symbol(sp.id_to_piece(i), n=counts[sp.id_to_piece(i)])
    d.finalize(threshold=-1, nwords=-1, padding_factor=1)
    d.save(str(dest / "dict.txt"))


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="copies of each language's verses in train")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--workers", default="1,2", help="comma-separated --workers values")
    parser.add_argument("--rounds", type=int, default=1, help="alternated rounds; each row keeps its best")
    parser.add_argument("--text-path", action="store_true", help="add the former text path's rows")
    parser.add_argument("--work", default="", help="scratch folder (default: a new one under /tmp, removed)")
    parser.add_argument("--one", nargs=3, metavar=("WORK", "SYSTEM", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # child process: one measurement, JSON on the last line of stdout
        import logging

        logging.disable(logging.WARNING)
        print(json.dumps(measure_one(Path(args.one[0]), args.one[1], int(args.one[2]))))
        return
    import tempfile

    work = Path(args.work or tempfile.mkdtemp(prefix="prepare_bench."))
    where = machine()
    lines = setup(work, args.repeat, args.vocab_size)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    systems = ["ours", "fairseq"] + (["text"] if args.text_path else [])
    workers = [int(w) for w in args.workers.split(",")]
    best = {}
    for _ in range(args.rounds):
        for w in workers:
            for system in systems:
                out = subprocess.run([sys.executable, __file__, "--one", str(work), system, str(w)], env=env,
                                     capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
                result = json.loads(out)
                key = (system, w)
                if key not in best or result["wall"] < best[key]["wall"]:
                    best[key] = result
                if result["cpu"] < best[key].setdefault("best_cpu", result["cpu"]):
                    best[key]["best_cpu"] = result["cpu"]
    sizes = {k: v["sizes"] for k, v in best.items()}
    assert len({json.dumps(s, sort_keys=True) for s in sizes.values()}) == 1, sizes  # every system: same data-bin
    if not args.work:
        shutil.rmtree(work)
    print(f"\nMachine: {where}; load average {os.getloadavg()[0]:.1f} at the end.")
    print(f"Data: {lines:,} sentences (Bible en/es/ny verses, train x{args.repeat}); vocab {args.vocab_size}.\n")
    print("| system | workers | sentences/s (wall) | x 1 worker | sentences per CPU-second | peak RSS MiB (rise) |")
    print("|---|---:|---:|---:|---:|---:|")
    for system in systems:
        for w in workers:
            r = best[(system, w)]
            scale = best[(system, workers[0])]["wall"] / r["wall"]
            print(f"| {SYSTEMS[system]} | {w} | {lines / r['wall']:,.0f} | {scale:.2f} | "
                  f"{lines / r['best_cpu']:,.0f} | {r['rss_mib']:,.0f} ({r['rise_mib']:+,.0f}) |")


if __name__ == "__main__":
    main()
