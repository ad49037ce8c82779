"""Helpers of ``recipes/demo.sh`` (``make demo``): a random-init baseline checkpoint, the genre classification
text of the shipped Bible sample, and the results table.

    python -m fairseq_xlm.cli.demo random-init OUT.pt DATA --task xlm_pretrain ...   (fairseq-train flags)
    python -m fairseq_xlm.cli.demo genre-raw --sample RAW --out DIR [--train-lang en] [--pair en-es]
    python -m fairseq_xlm.cli.demo report --dir data-bin/demo [--langs en,es] [--pretrain-updates N ...]

``report`` reads what demo.sh leaves under DIR/runs (one ``xlm`` and one ``random`` file of each kind):

    eval/ppl.{run}.log            fairseq-validate of the pretraining checkpoints on the test split
    eval/mtppl.{run}.{src}-{tgt}.log   fairseq-validate of the MT checkpoints, one direction each
    eval/bleu.{run}.{src}-{tgt}   the sacrebleu score printed by recipes/evaluate_mt.sh
    eval/retrieval.{run}.json     python -m fairseq_xlm.cli.evaluate_retrieval --json of the pretraining checkpoints
    genre/table.{run}.md          the accuracy row written by python -m fairseq_xlm.cli.evaluate_xnli
    genre/raw-genre/              the classification text (for the majority-class reference)
    done/{N}-{stage}              stage stamps holding the stage's wall time in seconds

and writes DIR/RESULTS.md (atomically): every number of the pretrained model next to the random-init one, and
the learning curves of ``fairseq_xlm.cli.curves`` (DIR/curves-*.png) from the runs' train.log files. The numbers
are read and collected by ``fairseq_xlm.cli.study.gather``, as ``make replicate``'s are, and kept as records
(claim ``demo``, arms ``xlm`` and ``random``, seed 1) in DIR/results/demo.tsv.
"""

import argparse
import collections
import glob
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_xlm.cli import setup_logging
from fairseq_xlm.cli.study import gather

RUNS = ("xlm", "random")
RUN_TITLES = {"xlm": "XLM pretrained", "random": "random init"}


# ------------------------------------------------------------------------------------- baseline
def random_init(out: str, train_argv: Sequence[str]) -> str:
    """Save the model fairseq-train would start from (``train_argv``: its flags) as a checkpoint at ``out``,
    without training: the random-init baseline every learned stage is compared with."""
    import numpy as np
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, list(train_argv) + ["--no-save-optimizer-state"])
    cfg = convert_namespace_to_omegaconf(args)
    utils.import_user_module(cfg.common)
    # fairseq-train seeds the same way before it builds the model
    np.random.seed(cfg.common.seed)
    utils.set_torch_seed(cfg.common.seed)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    trainer.save_checkpoint(out, {"train_iterator": {"epoch": 1}})  # fairseq writes out.tmp, then renames
    return out


# --------------------------------------------------------------------------------- genre corpus
def _write(path: str, lines: Sequence[str]) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    os.replace(tmp, path)


def genre_of_id(verse_id: str) -> str:
    """Genre label of a verse id ``BB.CCC.VVV`` (its book number decides)."""
    from fairseq_xlm.cli.bible import genre

    return genre(int(verse_id.split(".")[0]))


def genre_raw(sample: str, out: str, train_lang: str = "en", pair: Tuple[str, str] = ("en", "es")) -> Dict[str, int]:
    """The classification raw layout of ``fairseq_xlm.cli.prepare_xnli`` from the Bible sample: training verses
    of ``train_lang`` only (zero-shot), and valid/test from the parallel part, so every language is tested
    on the same verses. Labels of parallel verses come from their ids. Returns {file prefix: lines}."""
    from fairseq_xlm.cli.bible import GENRES

    os.makedirs(out, exist_ok=True)
    counts = {}
    text, labels = gather.read_lines(os.path.join(sample, f"train.{train_lang}")), gather.read_lines(
        os.path.join(sample, f"train.{train_lang}.label"))
    if len(text) != len(labels):
        raise ValueError(f"{sample}/train.{train_lang}.label: {len(labels)} labels for {len(text)} verses")
    _write(os.path.join(out, f"train.{train_lang}.input0"), text)
    _write(os.path.join(out, f"train.{train_lang}.label"), labels)
    counts[f"train.{train_lang}"] = len(text)
    name = "-".join(pair)
    for split in ("valid", "test"):
        ids = gather.read_lines(os.path.join(sample, f"{split}.{name}.id"))
        split_labels = [genre_of_id(i) for i in ids]
        for lang in pair:
            verses = gather.read_lines(os.path.join(sample, f"{split}.{name}.{lang}"))
            if len(verses) != len(ids):
                raise ValueError(f"{sample}/{split}.{name}.{lang}: {len(verses)} lines but {len(ids)} verse ids")
            _write(os.path.join(out, f"{split}.{lang}.input0"), verses)
            _write(os.path.join(out, f"{split}.{lang}.label"), split_labels)
            counts[f"{split}.{lang}"] = len(verses)
    _write(os.path.join(out, "labels.txt"), [g for _, _, g in GENRES])
    return counts


def majority_reference(raw_genre: str, train_lang: str, langs: Sequence[str]) -> Tuple[str, Dict[str, float]]:
    """The most frequent training genre and its share (%) of each language's test labels: the accuracy of
    always answering it."""
    train = gather.read_lines(os.path.join(raw_genre, f"train.{train_lang}.label"))
    label, _ = collections.Counter(train).most_common(1)[0]
    shares = {}
    for lang in langs:
        test = gather.read_lines(os.path.join(raw_genre, f"test.{lang}.label"))
        shares[lang] = 100.0 * sum(t == label for t in test) / len(test)
    return label, shares


def stage_times(done_dir: str) -> List[Tuple[str, float]]:
    """(stage, seconds) from the stamps ``done/{N}-{name}``, in stage order."""
    out = []
    for path in sorted(glob.glob(os.path.join(done_dir, "*")), key=lambda p: os.path.basename(p)):
        try:
            out.append((os.path.basename(path), float(open(path, encoding="utf-8").read().strip() or 0)))
        except ValueError:
            continue
    return out


def demo_records(directory: str, langs: Sequence[str]) -> Tuple[List[gather.Record], int]:
    """Every number of a finished demo as records (claim ``demo``, arms ``xlm`` and ``random``, seed 1), read
    by ``gather``'s readers as ``make replicate``'s jobs read theirs; and the number of retrieval test pairs."""
    ev = os.path.join(directory, "runs", "eval")
    l1, l2 = langs[0], langs[1]
    records, n_pairs = [], 0
    for r in RUNS:
        values = {}
        ppl = gather.parse_valid_log(os.path.join(ev, f"ppl.{r}.log"), "test")
        for key in [f"mlm_ppl_{lang}" for lang in langs] + [f"tlm_ppl_{l1}-{l2}"]:
            if key not in ppl:
                raise ValueError(f"{ev}/ppl.{r}.log: no {key} in its test line")
            values[key] = ppl[key]
        for src, tgt in ((l1, l2), (l2, l1)):
            values[f"bleu_{src}_{tgt}"] = gather.read_score(os.path.join(ev, f"bleu.{r}.{src}-{tgt}"))
        for src, tgt in ((l1, l2), (l2, l1)):
            log = os.path.join(ev, f"mtppl.{r}.{src}-{tgt}.log")
            values[f"mt_ppl_{src}_{tgt}"] = gather.parse_valid_log(log, "test")["ppl"]
        retrieval = os.path.join(ev, f"retrieval.{r}.json")
        values.update(gather.retrieval_measures(retrieval, (l1, l2)))
        n_pairs = gather.read_json(retrieval).get("n", 0)
        values.update(gather.genre_measures(os.path.join(directory, "runs", "genre", f"table.{r}.md"), langs))
        records += gather.records_of("demo", r, 1, values)
    return records, n_pairs


def demo_measures(directory: str, langs: Sequence[str]) -> Tuple[Dict[str, Dict[str, Dict[int, float]]], int]:
    """The demo's numbers collected as a study's (``gather.collect``): {measure: {run: {1: value}}}, and the
    number of retrieval test pairs."""
    records, n_pairs = demo_records(directory, langs)
    return gather.collect(records)["demo"], n_pairs


# -------------------------------------------------------------------------------------- report
def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def build_report(directory: str, langs: Sequence[str], train_lang: str = "en", settings: Optional[dict] = None,
                 figures: Sequence[Tuple[str, str]] = ()) -> str:
    """The RESULTS.md text for a finished demo in ``directory`` (see the module docstring for its files);
    ``figures``: (title, PNG file beside RESULTS.md) learning curves to show below the table."""
    settings = settings or {}
    runs = os.path.join(directory, "runs")
    l1, l2 = langs[0], langs[1]
    pair = f"{l1}-{l2}"
    directions = [(l1, l2), (l2, l1)]
    data, n_pairs = demo_measures(directory, langs)
    beam = settings.get("beam", "?")
    # (measure, row title, test data, digits, better) per row, in the table's order
    specs = [(f"mlm_ppl_{x}", f"MLM perplexity {x}", f"test.{x}", 1, "lower") for x in langs]
    specs.append((f"tlm_ppl_{pair}", f"TLM perplexity {pair}", f"test.{pair}", 1, "lower"))
    for kind, row, digits, better in (("bleu", "BLEU {}→{} (beam %s)" % beam, 2, "higher"),
                                      ("mt_ppl", "translation perplexity {}→{}", 1, "lower"),
                                      ("p1", "retrieval P@1 {}→{}, %", 1, "higher")):
        where = f"test.{pair} ({n_pairs} pairs)" if kind == "p1" else f"test.{pair}"
        specs += [(f"{kind}_{s}_{t}", row.format(s, t), where, digits, better) for s, t in directions]
    specs += [(f"acc_{x}", f"genre accuracy {x} ({'trained on it' if x == train_lang else 'zero-shot'}), %",
               f"test.{pair}.{x}", 1, "higher") for x in langs]
    # (measure, data, xlm, random, better): each run's one value (seed 1) of the collected measure
    rows = [(row, where, _fmt(data[m]["xlm"][1], d), _fmt(data[m]["random"][1], d), better)
            for m, row, where, d, better in specs]

    label, shares = majority_reference(os.path.join(runs, "genre", "raw-genre"), train_lang, langs)
    u = {k: settings.get(k, "?") for k in ("pretrain_updates", "umt_updates", "genre_updates")}
    lines = [
        "# fairseq_xlm demo: what cross-lingual pretraining bought",
        "",
        "Data: `data/bible-sample` (English: World English Bible, Spanish: Reina-Valera 1909; split by chapter),",
        f"one shared sentencepiece BPE of {settings.get('vocab', '?')} pieces. Encoder `xlm_tiny` (2 layers, d=64),",
        "MT model `xlm_mt_tiny`.",
        "",
        f"- **XLM pretrained**: MLM ({', '.join(langs)}) + TLM ({pair}) pretraining for {u['pretrain_updates']} "
        "updates, then each downstream",
        f"  stage from that checkpoint: unsupervised MT (denoising + back-translation) for {u['umt_updates']} "
        f"updates, genre classification for {u['genre_updates']}.",
        "- **random init**: the same steps from an untrained checkpoint of the same encoder (random weights),",
        "  with the same number of updates; in the perplexity rows, that untrained model itself.",
        "- One update is one optimiser step on one step kind, as in the authors' code (pretraining: 3 per "
        "iteration, MLM en, MLM es, TLM;",
        "  UMT: 4, AE en, AE es, BT twice). Before, one update held every step kind; the update counts were "
        "multiplied by 3 and 4",
        "  to keep the same amount of training.",
        "",
        f"| measure | test data | {RUN_TITLES['xlm']} | {RUN_TITLES['random']} | better |",
        "|---|---|---:|---:|---|",
    ]
    lines += [f"| {m} | {d} | {a} | {b} | {w} |" for m, d, a, b, w in rows]
    lines += [
        "",
        f"Genre classification: trained on {train_lang} verses only; every language is tested on the same "
        f"verses. Always answering the most frequent training genre ({label}) scores "
        + ", ".join(f"{shares[lang]:.1f}% ({lang})" for lang in langs) + ".",
        "Translation perplexity is teacher-forced on the reference. BLEU stays near zero after minutes of CPU "
        "training: unsupervised MT needs far more data, model and updates.",
        "Retrieval (beyond the paper, as XTREME's Tatoeba task): each test sentence's nearest neighbour by cosine "
        "among the other side's",
        "sentences, with the pretraining encoder's last layer mean-pooled "
        f"(`python -m fairseq_xlm.cli.evaluate_retrieval`); chance is 1/{n_pairs}.",
    ]
    if figures:
        lines += ["", "## Learning curves", "",
                  "Validation metrics over updates, read from fairseq's own logs (`python -m fairseq_xlm.cli.curves`);",
                  "solid: XLM pretrained, dashed: random init.", ""]
        for title, name in figures:
            lines += [f"![{title}]({name})", ""]
        lines.pop()
    times = stage_times(os.path.join(runs, "done"))
    if times:
        lines += ["", "| stage | wall time (s) |", "|---|---:|"]
        lines += [f"| {name} | {sec:.0f} |" for name, sec in times]
        lines += [f"| total | {sum(s for _, s in times):.0f} |"]
    return "\n".join(lines) + "\n"


def write_report(directory: str, text: str, out: Optional[str] = None) -> str:
    """Write ``text`` to ``out`` (default DIR/RESULTS.md) atomically; returns the path."""
    path = out or os.path.join(directory, "RESULTS.md")
    _write(path, text.rstrip("\n").split("\n"))
    return path


# ------------------------------------------------------------------------------------------ CLI
def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fairseq_xlm.cli.demo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("random-init", help="save the untrained model of a fairseq-train command line")
    p.add_argument("out", help="checkpoint to write")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="fairseq-train arguments (data dir first)")
    p = sub.add_parser("genre-raw", help="Bible sample -> raw genre classification text (prepare_xnli layout)")
    p.add_argument("--sample", required=True, help="folder of the unpacked Bible sample (fairseq_xlm.cli.bible output)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--train-lang", default="en", help="the only training language (zero-shot to the others)")
    p.add_argument("--pair", default="en-es", help="parallel pair whose valid/test verses are the eval sets")
    p = sub.add_parser("report", help="collect a finished demo's metrics into DIR/RESULTS.md")
    p.add_argument("--dir", required=True, help="the demo folder (data-bin/demo)")
    p.add_argument("--out", default=None, help="output file (default DIR/RESULTS.md)")
    p.add_argument("--langs", default="en,es", help="the two languages, pretraining order")
    p.add_argument("--train-lang", default="en", help="training language of the classifier")
    for name in ("vocab", "beam", "pretrain-updates", "umt-updates", "genre-updates"):
        p.add_argument(f"--{name}", default="?", help=f"{name.replace('-', ' ')} (shown in the text)")
    return parser


def main(argv: Optional[Sequence[str]] = None):
    """CLI entry point; bad input exits with one clear message."""
    args = get_parser().parse_args(argv)
    from fairseq_xlm.data.langs import parse_langs

    try:
        if args.command == "random-init":
            train_args = [a for a in args.train_args if a != "--"]
            if not train_args:
                raise ValueError("random-init: give the fairseq-train arguments after OUT")
            return random_init(args.out, train_args)
        if args.command == "genre-raw":
            pair = tuple(parse_langs(args.pair.replace("-", ","), "--pair"))
            if len(pair) != 2:
                raise ValueError(f"--pair {args.pair!r}: give two languages, e.g. en-es")
            return genre_raw(args.sample, args.out, args.train_lang, pair)
        langs = parse_langs(args.langs)
        if len(langs) != 2:
            raise ValueError(f"--langs {args.langs!r}: the demo report compares exactly two languages")
        settings = {k: getattr(args, k) for k in ("vocab", "beam", "pretrain_updates", "umt_updates",
                                                  "genre_updates")}
        from fairseq_xlm.cli.curves import demo_figures

        text = build_report(args.dir, langs, args.train_lang, settings, figures=demo_figures(args.dir))
        # the table's numbers as records, as make replicate's jobs write theirs (its report can read them)
        gather.write_records(os.path.join(args.dir, "results", "demo.tsv"), demo_records(args.dir, langs)[0])
        path = write_report(args.dir, text, args.out)
        print(text, end="")
        print(f"(written to {path})")
        return path
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}")


if __name__ == "__main__":
    setup_logging()
    main(sys.argv[1:])
