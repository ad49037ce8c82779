"""Part A's plain text (``python -m fairseq_xlm.cli.get_data ... --out OUT``) -> the data-bin of one of the
paper's settings, prepared as the authors prepare it.

    python -m fairseq_xlm.cli.prepare_paper xnli15 --acquired OUT --destdir data-bin/xnli15 [--workers 16]
    python -m fairseq_xlm.cli.prepare_paper umt-enfr --acquired OUT --destdir data-bin/umt-enfr
    python -m fairseq_xlm.cli.prepare_paper lowres-ne --acquired OUT --destdir data-bin/ne --bpe sentencepiece

Experiments: ``fairseq_xlm.paper_data.experiments`` (``--list`` prints them). Stages, each re-runnable (a
marker in DESTDIR/prep/paper/ records its settings; outputs are written as ``.tmp`` and renamed):

    tokenize-*  every source file -> the authors' text form (``text_form``; --workers processes)
    split-*     the authors' seeded 5,000/5,000 valid/test split (``seeded_split``; --split stream for corpora
                larger than memory), or the newstest sets as valid/test
    bpe-text    the text BPE is learned on: the alpha=0.5 language mix (paper, 3.1) or all training text
    learnbpe    fastBPE codes learned from scratch (``fastbpe``), joint over the languages
    getvocab    the vocabulary of the training text with the codes applied
    prepare     ``fairseq_xlm.cli.prepare --bpe authors --pretokenized`` with those codes (or --bpe
                sentencepiece trained on the same mix): check, encode, binarize, manifest
    xnli        XNLI (OUT/xnli, as prepare_xnli extract writes it) binarized into DESTDIR/xnli, for xnli15
"""

import argparse
import dataclasses
import logging
import os
import shutil
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_xlm.cli import setup_logging
from fairseq_xlm.errors import DataSourceError
from fairseq_xlm.paper_data import crash_point, fastbpe, seeded_split, text_form
from fairseq_xlm.paper_data.experiments import EXPERIMENTS, Experiment

logger = logging.getLogger("fairseq_xlm.cli.prepare_paper")


@dataclasses.dataclass
class PaperConfig:
    """Settings of one preparation (every field is a flag)."""

    experiment: str
    acquired: str
    destdir: str
    langs: str = ""
    codes: int = 0
    held_out: int = 5000
    split: str = "shuf"
    bpe: str = "authors"
    vocab_size: int = 60000
    bpe_sample_lines: int = 5_000_000
    max_mono_lines: int = -1
    workers: int = 1
    shards: int = 1
    stop_after: str = ""
    force: bool = False


def _files(cfg: PaperConfig, exp: Experiment, langs: List[str]) -> Tuple[Dict[str, Tuple[str, str]], List[str]]:
    """{tokenized name: (source path, language)} and the pairs used; every source checked to exist."""
    out, acq = {}, cfg.acquired
    for lang in langs:
        out[f"{exp.mono}.{lang}"] = (os.path.join(acq, exp.mono, f"{lang}.txt"), lang)
    _exist(out, acq)
    pairs = [p for p in exp.pairs if set(p.split("-")) <= set(langs)]
    for pair in pairs:
        folder = os.path.join(acq, exp.para)
        corpora = sorted({f.split(".")[0] for f in os.listdir(folder) if f.endswith(f".{pair}.{pair.split('-')[0]}")}
                         ) if os.path.isdir(folder) else []
        if not corpora:
            raise DataSourceError(f"{folder}: no {{corpus}}.{pair}.* files (run python -m fairseq_xlm.cli.get_data "
                                  f"{'para --pairs' if exp.para == 'para' else 'nmt --pairs'} {pair} --out {acq})")
        for corpus in corpora:
            for lang in pair.split("-"):
                out[f"{corpus}.{pair}.{lang}"] = (os.path.join(folder, f"{corpus}.{pair}.{lang}"), lang)
    for pair, sets in exp.newstest.items():
        if set(pair.split("-")) <= set(langs):
            for name in sets:
                for lang in pair.split("-"):
                    out[f"{name}.{pair}.{lang}"] = (os.path.join(acq, "newstest", f"{name}.{pair}.{lang}"), lang)
    _exist(out, acq)
    return out, pairs


def _exist(files: Dict[str, Tuple[str, str]], acq: str) -> None:
    for path, _ in files.values():
        if not os.path.isfile(path):
            raise DataSourceError(f"{path}: missing; fetch it with python -m fairseq_xlm.cli.get_data (--out {acq})")


def _concat(paths: List[str], dst: str) -> None:
    with open(f"{dst}.tmp", "wb") as out:
        for path in paths:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
    os.replace(f"{dst}.tmp", dst)


def run(cfg: PaperConfig) -> dict:
    """Every stage, skipping those done; returns {stage: result}."""
    from fairseq_xlm.cli import prepare, prepare_xnli
    from fairseq_xlm.cli.prepare_stages import PrepareConfig, draw_sample

    if cfg.experiment not in EXPERIMENTS:
        raise DataSourceError(f"experiment '{cfg.experiment}': choose one of {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[cfg.experiment]
    langs = [l.strip() for l in cfg.langs.split(",") if l.strip()] if cfg.langs else list(exp.langs)
    for lang in langs:
        text_form.check_lang(lang, "--langs")
        if lang not in exp.langs:
            raise DataSourceError(f"--langs: '{lang}' is not a language of {exp.name} ({','.join(exp.langs)})")
    if cfg.split not in ("shuf", "stream") or cfg.bpe not in ("authors", "sentencepiece") or cfg.workers < 1:
        raise DataSourceError("--split is shuf or stream, --bpe authors or sentencepiece, --workers >= 1")
    files, pairs = _files(cfg, exp, langs)
    work = os.path.join(cfg.destdir, "prep", "paper")
    tok, text = os.path.join(work, "tok"), os.path.join(work, "text")
    for folder in (tok, text):
        os.makedirs(folder, exist_ok=True)
    stages, out = prepare.Stages(cfg, work), {}
    rel = lambda *p: os.path.relpath(os.path.join(*p), cfg.destdir)  # noqa: E731
    max_mono = exp.max_mono_lines if cfg.max_mono_lines < 0 else cfg.max_mono_lines

    for name, (src, lang) in sorted(files.items()):
        limit = max_mono if name.startswith(f"{exp.mono}.") else 0
        # a stage of its own (no chain to the files before it): a job that tokenized only this file (--langs L
        # --stop-after tokenize, e.g. one SLURM job per language) leaves a marker the full run accepts
        out[f"tokenize-{name}"] = prepare.Stages(cfg, work).run(
            f"tokenize-{name}", {"src": [src, os.path.getsize(src), os.stat(src).st_mtime_ns], "lang": lang,
                                 "lower": exp.lowercase, "limit": limit},
            lambda src=src, lang=lang, name=name, limit=limit: {
                "lines": text_form.tokenize_file(src, os.path.join(tok, name), lang, exp.lowercase, cfg.workers,
                                                 limit), "outputs": [rel(tok, name)]})
    if cfg.stop_after == "tokenize":
        return out
    split = seeded_split.shuf_split if cfg.split == "shuf" else seeded_split.stream_split
    units = [(lang, [f"{exp.mono}.{lang}"], [lang]) for lang in langs]
    units += [(pair, sorted(n for n in files if f".{pair}." in n and n.split(".")[0] not in
                            {s for sets in exp.newstest.values() for s in sets}), pair.split("-")) for pair in pairs]
    for unit, names, sides in units:
        ins = [os.path.join(tok, f"{unit}.all.{s}") if "-" in unit else os.path.join(tok, names[0]) for s in sides]
        prefix = "" if "-" not in unit else f"{unit}."
        outs = {part: [os.path.join(text, f"{part}.{prefix}{s}") for s in sides] for part in ("train", "valid", "test")}
        if exp.newstest:  # all of it is training text; valid/test come from newstest below
            outs = {"train": outs["train"]}

        def do_split(unit=unit, names=names, sides=sides, ins=ins, outs=outs):
            if "-" in unit:  # a pair's corpora, one after the other (name order), then split as one
                for side, path in zip(sides, ins):
                    _concat([os.path.join(tok, n) for n in names if n.endswith(f".{side}")], path)
            if exp.newstest:
                for src, dst in zip(ins, outs["train"]):
                    _concat([src], dst)
                return {"outputs": [rel(p) for p in outs["train"]]}
            sizes = split(ins, outs, cfg.held_out)
            return {"sizes": sizes, "outputs": [rel(p) for ps in outs.values() for p in ps]}

        tokenized = [[n, *(lambda st: (st.st_size, st.st_mtime_ns))(os.stat(os.path.join(tok, n)))] for n in names]
        out[f"split-{unit}"] = stages.run(f"split-{unit}", {"how": cfg.split, "held_out": cfg.held_out,
                                                            "tokenized": tokenized}, do_split)
    for pair, (valid, test) in exp.newstest.items():
        if set(pair.split("-")) <= set(langs):
            def held(pair=pair, valid=valid, test=test):
                made = []
                for part, name in (("valid", valid), ("test", test)):
                    for lang in pair.split("-"):
                        for dst in (f"{part}.{lang}", f"{part}.{pair}.{lang}"):  # get-data-nmt.sh links both
                            _concat([os.path.join(tok, f"{name}.{pair}.{lang}")], os.path.join(text, dst))
                            made.append(rel(text, dst))
                return {"outputs": made}

            tokenized = [[n, os.path.getsize(os.path.join(tok, n))] for n in sorted(files)
                         if n.split(".")[0] in (valid, test) and f".{pair}." in n]
            out[f"heldout-{pair}"] = stages.run(f"heldout-{pair}", {"sets": [valid, test], "tokenized": tokenized},
                                                held)

    mono = {f"train.{lang}": [f"train.{lang}"] for lang in langs}
    sample = os.path.join(work, "bpe_text.txt")
    pcfg = PrepareConfig(raw=text, destdir=cfg.destdir, langs=",".join(langs), sample_lines=cfg.bpe_sample_lines,
                         seed=1, alpha=0.5)

    def bpe_text():
        if exp.bpe_text == "all":
            _concat([os.path.join(text, f"train.{lang}") for lang in langs], sample)
            return {"outputs": [rel(sample)]}
        lines = {f: seeded_split.count_lines(os.path.join(text, f)) for fs in mono.values() for f in fs}
        return dict(draw_sample(pcfg, mono, langs, lines, sample), outputs=[rel(sample)])

    out["bpe-text"] = stages.run("bpe-text", {"how": exp.bpe_text, "lines": cfg.bpe_sample_lines}, bpe_text)
    pcfg = dataclasses.replace(pcfg, workers=cfg.workers, shards=cfg.shards, force=cfg.force)
    if cfg.bpe == "authors":
        codes_path, vocab_path = os.path.join(work, "codes"), os.path.join(work, "vocab")
        merges = cfg.codes or exp.codes

        def learn():
            codes = fastbpe.learn_bpe([sample], merges)
            fastbpe.write_codes(codes, f"{codes_path}.tmp")
            crash_point("learnbpe")
            os.replace(f"{codes_path}.tmp", codes_path)
            return {"merges": len(codes), "outputs": [rel(codes_path)]}

        def vocab():
            bpe = fastbpe.ApplyBpe(fastbpe.read_codes(codes_path))
            counts: Dict[str, int] = {}
            # every training text: the monolingual and the parallel sides (fastBPE's getvocab over all train files)
            trains = sorted(os.path.join(text, f) for f in os.listdir(text) if f.startswith("train."))
            for word, n in fastbpe.count_words(trains).items():
                for piece in bpe.word(word).split(" "):
                    counts[piece] = counts.get(piece, 0) + n
            ranked = sorted(counts.items(), key=lambda wc: (-wc[1], wc[0].encode("utf-8")))
            fastbpe.write_vocab(ranked, f"{vocab_path}.tmp")
            crash_point("getvocab")
            os.replace(f"{vocab_path}.tmp", vocab_path)
            return {"words": len(ranked), "outputs": [rel(vocab_path)]}

        out["learnbpe"] = stages.run("learnbpe", {"merges": merges}, learn)
        out["getvocab"] = stages.run("getvocab", {}, vocab)
        pcfg = dataclasses.replace(pcfg, bpe="authors", codes=codes_path, vocab=vocab_path, pretokenized=True,
                                   lowercase_accents=exp.lowercase)
    else:
        pcfg = dataclasses.replace(pcfg, bpe="sentencepiece", sample_file=sample, vocab_size=cfg.vocab_size)
    out["prepare"] = prepare.run(pcfg)
    xnli = os.path.join(cfg.acquired, "xnli")
    if exp.xnli and os.path.isdir(xnli):
        out["xnli"] = stages.run("xnli", {"raw": sorted(os.listdir(xnli))}, lambda: dict(
            prepare_xnli.binarize(xnli, cfg.destdir), outputs=["xnli"]))
    elif exp.xnli:
        logger.warning(f"{xnli}: absent, no XNLI data (python -m fairseq_xlm.cli.get_data xnli --out {cfg.acquired})")
    logger.info(f"{exp.name}: data-bin ready in {cfg.destdir} (--langs {','.join(langs)})")
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fairseq_xlm.cli.prepare_paper", description=__doc__.split("\n")[0])
    p.add_argument("experiment", nargs="?", help=f"one of {', '.join(EXPERIMENTS)}")
    p.add_argument("--list", action="store_true", help="print the experiments and stop")
    p.add_argument("--acquired", help="part A's output folder (get_data --out)")
    p.add_argument("--destdir", help="the data-bin to write (work files in DESTDIR/prep)")
    p.add_argument("--langs", default="", help="a subset of the experiment's languages (default: all)")
    p.add_argument("--codes", type=int, default=0, help="fastBPE merges (default: the experiment's, e.g. 95000)")
    p.add_argument("--held-out", type=int, default=5000, help="lines of valid and of test per corpus (authors: 5000)")
    p.add_argument("--split", default="shuf", help="shuf: the authors' split to the byte (16 bytes of memory per "
                   "line); stream: a seeded split in two passes for corpora larger than memory")
    p.add_argument("--bpe", default="authors", help="authors (fastBPE codes learned here) or sentencepiece (ours, "
                   "trained on the same text)")
    p.add_argument("--vocab-size", type=int, default=60000, help="--bpe sentencepiece: its vocabulary size")
    p.add_argument("--bpe-sample-lines", type=int, default=5_000_000, help="lines of the language mix BPE learns on")
    p.add_argument("--max-mono-lines", type=int, default=-1, help="keep the first N monolingual lines per language "
                   "(default: the experiment's; 0: all)")
    p.add_argument("--workers", type=int, default=1, help="processes for tokenizing and binarizing")
    p.add_argument("--shards", type=int, default=1, help="--bpe sentencepiece: training text in N data-bins")
    p.add_argument("--stop-after", default="", choices=["", "tokenize"], help="tokenize: stop after tokenizing "
                   "(one job per language on a cluster; the full run then skips those files)")
    p.add_argument("--force", action="store_true", help="redo every stage")
    return p


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """CLI entry point; bad input exits with one line naming the file or flag."""
    args = parser().parse_args(argv)
    if args.list:
        for exp in EXPERIMENTS.values():
            print(f"{exp.name:10s} {','.join(exp.langs)}: {exp.note}")
        return {}
    if not (args.experiment and args.acquired and args.destdir):
        parser().error("EXPERIMENT, --acquired and --destdir are required")
    cfg = PaperConfig(**{k: v for k, v in vars(args).items() if k != "list"})
    try:
        return run(cfg)
    except ValueError as e:  # DataSourceError and the stages' errors: one line, no traceback
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    setup_logging()
    main(sys.argv[1:])
