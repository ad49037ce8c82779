"""prepare_paper's stages: sentences per second per core and peak memory, at 1x and 10x input.

    .venv/bin/python bench/paper_data.py [--lines 5000 --scales 1,10 --merges 5000 --tsv BIBLE.tsv.gz]

Input: real Bible verses (../shared/data/bible.en-es-ny.tsv.gz), en and es, the first --lines verses per
language at 1x and those verses ten times at 10x (the replicated Bible: word counts grow with the input, the
distinct words do not, as in a corpus whose vocabulary has saturated). Each stage runs alone in a fresh process
(``--stage``) on the previous stage's output and reports:

  * sentences/s/core  sentences / (user + sys CPU seconds of the process and its workers): per core, and far
                      less disturbed by other work on a shared machine than wall time
  * peak RSS          VmHWM of the process (imports of torch and fairseq included) and its rise over the
                      resident set when the stage began (what the stage itself holds)

Stages: tokenize (the authors' text form, en + es, lowercased), split (the authors' shuf split, and the
streaming one), learnbpe (fastBPE codes on all training text, --merges), getvocab, encode (BPE applied by
``prepare --bpe authors --pretokenized``), binarize (its fairseq-preprocess).
"""

import argparse
import csv
import gzip
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TSV = os.environ.get("XLM_BIBLE_TSV") or REPO.parent / "shared" / "data" / "bible.en-es-ny.tsv.gz"
LANGS = ("en", "es")
STAGES = ("tokenize", "split-shuf", "split-stream", "learnbpe", "getvocab", "encode+binarize")


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_stage(stage: str, work: Path, merges: int) -> dict:
    """One stage in this process: {sentences, cpu, wall, hwm_kb, rise_kb} (+ per-substage rows for prepare)."""
    from fairseq_xlm.paper_data import fastbpe, seeded_split, text_form

    start_rss, cpu0, t0 = _status("VmRSS"), _cpu(), time.time()
    n = 0
    text = work / "text"
    if stage == "tokenize":
        for lang in LANGS:
            n += text_form.tokenize_file(str(work / f"raw.{lang}"), str(work / f"tok.{lang}"), lang, True)
    elif stage.startswith("split"):
        text.mkdir(exist_ok=True)
        for lang in LANGS:
            prefix = "" if stage == "split-shuf" else "stream."
            outs = {p: [str(text / f"{prefix}{p}.{lang}")] for p in ("train", "valid", "test")}
            split = seeded_split.shuf_split if stage == "split-shuf" else seeded_split.stream_split
            n += sum(split([str(work / f"tok.{lang}")], outs, 500).values())
    elif stage == "learnbpe":
        trains = [str(text / f"train.{lang}") for lang in LANGS]
        fastbpe.write_codes(fastbpe.learn_bpe(trains, merges), str(work / "codes"))
        n = sum(seeded_split.count_lines(p) for p in trains)
    elif stage == "getvocab":
        bpe = fastbpe.ApplyBpe(fastbpe.read_codes(str(work / "codes")))
        counts = {}
        trains = [str(text / f"train.{lang}") for lang in LANGS]
        for word, c in fastbpe.count_words(trains).items():
            for piece in bpe.word(word).split(" "):
                counts[piece] = counts.get(piece, 0) + c
        fastbpe.write_vocab(sorted(counts.items(), key=lambda wc: (-wc[1], wc[0])), str(work / "vocab"))
        n = sum(seeded_split.count_lines(p) for p in trains)
    else:
        from fairseq_xlm.cli import prepare

        times = {}
        run = prepare.Stages.run

        def timed(self, name, params, fn):
            c, w = _cpu(), time.time()
            out = run(self, name, params, fn)
            times[name] = (_cpu() - c, time.time() - w, _status("VmHWM"))
            return out

        prepare.Stages.run = timed
        for f in text.glob("stream.*"):
            f.unlink()
        cfg = prepare.PrepareConfig(raw=str(text), destdir=str(work / "bin"), langs=",".join(LANGS), bpe="authors",
                                    codes=str(work / "codes"), vocab=str(work / "vocab"), pretokenized=True,
                                    lowercase_accents=True, force=True)
        prepare.run(cfg)
        n = sum(seeded_split.count_lines(str(p)) for p in text.iterdir())
        return {"sentences": n, "substages": {k: times[k] for k in ("encode", "binarize")},
                "start_rss": start_rss, "cpu": _cpu() - cpu0, "wall": time.time() - t0, "hwm_kb": _status("VmHWM")}
    return {"sentences": n, "cpu": _cpu() - cpu0, "wall": time.time() - t0, "hwm_kb": _status("VmHWM"),
            "rise_kb": _status("VmHWM") - start_rss}


def make_input(tsv: Path, work: Path, lines: int, pool: int) -> None:
    """raw.{en,es}: ``lines`` lines cycling the first ``pool`` verses (10x = the 1x text ten times)."""
    with gzip.open(tsv, "rt", encoding="utf-8") as f:
        rows = [r for r in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:] if r[4] and r[5]]
    work.mkdir(parents=True, exist_ok=True)
    for i, lang in enumerate(LANGS):
        verses = [r[4 + i] for r in rows][:pool]
        with open(work / f"raw.{lang}", "w", encoding="utf-8") as out:
            out.writelines(verses[k % len(verses)] + "\n" for k in range(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lines", type=int, default=5000, help="sentences per language at 1x")
    p.add_argument("--scales", default="1,10")
    p.add_argument("--merges", type=int, default=5000)
    p.add_argument("--tsv", default=str(TSV))
    p.add_argument("--work", default="/tmp/bench_paper_data")
    p.add_argument("--stage", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, Path(args.work), args.merges)))
        return
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    results = {}
    for scale in [int(s) for s in args.scales.split(",")]:
        work = Path(args.work) / f"x{scale}"
        make_input(Path(args.tsv), work, args.lines * scale, args.lines)
        for stage in STAGES:
            out = subprocess.run([sys.executable, __file__, "--stage", stage, "--work", str(work), "--merges",
                                  str(args.merges)], env=env, capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"{stage} at {scale}x failed:\n{out.stderr[-2000:]}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            if "substages" in res:
                prev = res["start_rss"]
                for name, (cpu, wall, hwm) in res["substages"].items():
                    results[(name, scale)] = {"sentences": res["sentences"], "cpu": cpu, "hwm_kb": hwm,
                                              "rise_kb": hwm - prev}
            else:
                results[(stage, scale)] = res
            print(f"# {stage} {scale}x done", file=sys.stderr, flush=True)
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), platform.processor())
    scales = sorted({s for _, s in results})
    print(f"CPU: {model}; {os.cpu_count()} cores (shared machine); --lines {args.lines} per language (en, es), "
          f"--merges {args.merges}; Python {platform.python_version()}")
    head = "| stage | " + " | ".join(f"sent/s/core {s}x | peak RSS {s}x (rise) MB" for s in scales) + " |"
    print(head)
    print("|" + "---|" * (1 + 2 * len(scales)))
    for stage in ("tokenize", "split-shuf", "split-stream", "learnbpe", "getvocab", "encode", "binarize"):
        cells = []
        for s in scales:
            r = results[(stage, s)]
            cells += [f"{r['sentences'] / max(r['cpu'], 1e-9):,.0f}",
                      f"{r['hwm_kb'] / 1024:,.0f} ({r['rise_kb'] / 1024:+,.0f})"]
        print(f"| {stage} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
