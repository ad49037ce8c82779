"""The statistics, records and report of ``recipes/replicate.sh`` (``make replicate``): the paper's orderings
at small scale, several seeds per arm, a paired comparison of each pair of neighbouring arms.

    python -m fairseq_xlm.cli.replicate record --out FILE --claim a --arm mlm --seed 1 genre TABLE.md [--langs es,ny]
    python -m fairseq_xlm.cli.replicate record ... ppl LOG --metric clm_ppl_ny
    python -m fairseq_xlm.cli.replicate record ... bleu TABLE.md --direction en-es
    python -m fairseq_xlm.cli.replicate record ... copy HYP SRC REF --direction en-es   (+ bleu_over_shifted)
    python -m fairseq_xlm.cli.replicate report --dir OUT [--curve TITLE:GLOB:METRIC ...] [--settings TEXT]

A record file holds tab-separated ``claim measure arm seed value`` lines (one job's numbers, written
atomically). ``OUT/results/plan.tsv`` says, per claim, ``claim  run|skipped  arm1,arm2,...  note``: the arms in
the order the paper expects (worst first) or why the claim was skipped. ``report`` reads OUT/results/*.tsv and
writes OUT/REPLICATION.md (and OUT/curves-*.png when matplotlib is installed).
"""

import argparse
import glob
import os
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_xlm.cli import setup_logging
from fairseq_xlm.cli.bible import write_lines
from fairseq_xlm.cli.curves import read_validations, series
from fairseq_xlm.cli.demo import parse_valid_log, read_accuracy_table
from fairseq_xlm.paired import better, comparison, fmt, mean_std

# What the paper reports for each claim (the wording; Lample & Conneau 2019).
PAPER = {
    "a": ("TLM adds to MLM for cross-lingual transfer", "XNLI zero-shot accuracy 71.5 (MLM) -> 75.1 (MLM+TLM)"),
    "b": ("pretraining helps supervised MT", "WMT'16 ro-en: about +4 BLEU from an MLM initialisation"),
    "c": ("MLM init beats CLM init beats none for unsupervised MT", "en-fr, de-en, ro-en: MLM > CLM > no init"),
    "d": ("a high-resource language lowers a low-resource language's perplexity",
          "Nepali perplexity 157 (alone) -> 109 (+ English, Hindi)"),
    "e": ("cross-lingual embeddings align (beyond the paper)", "-"),
}
Record = Tuple[str, str, str, int, float]  # claim, measure, arm, seed, value


# ------------------------------------------------------------------------------------------- records
def read_records(paths: Sequence[str]) -> List[Record]:
    """Every ``claim measure arm seed value`` line of ``paths``; a malformed line is an error naming it."""
    out = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for k, line in enumerate(f, 1):
                if not line.strip():
                    continue
                cells = line.rstrip("\n").split("\t")
                try:
                    claim, measure, arm, seed, value = cells
                    out.append((claim, measure, arm, int(seed), float(value)))
                except ValueError:
                    raise ValueError(f"{path}:{k}: expected 'claim measure arm seed value', got {line.strip()!r}")
    return out


def read_plan(path: str) -> List[Tuple[str, bool, List[str], str]]:
    """(claim, runs, arms in the expected order, note) per line of plan.tsv."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing (replicate.sh writes it first)")
    plan = []
    with open(path, encoding="utf-8") as f:
        for k, line in enumerate(f, 1):
            cells = line.rstrip("\n").split("\t")
            if len(cells) != 4 or cells[1] not in ("run", "skipped"):
                raise ValueError(f"{path}:{k}: expected 'claim run|skipped arms note', got {line.strip()!r}")
            plan.append((cells[0], cells[1] == "run", [a for a in cells[2].split(",") if a], cells[3]))
    return plan


# -------------------------------------------------------------------------------- measures of a job
def retrieval_measures(path: str) -> Dict[str, float]:
    """{p1_SRC_TGT, p1_TGT_SRC: P@1 %} of an ``evaluate_retrieval --json`` result file."""
    import json

    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    try:
        src, tgt = result["src"], result["tgt"]
        return {f"p1_{src}_{tgt}": 100 * float(result["p_at_1_src_tgt"]),
                f"p1_{tgt}_{src}": 100 * float(result["p_at_1_tgt_src"])}
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not an evaluate_retrieval --json result ({err})") from None


def genre_measures(table: str, langs: Sequence[str]) -> Dict[str, float]:
    """{acc_LANG: accuracy %} of the last row of an evaluate_xnli table, for ``langs``."""
    acc = read_accuracy_table(table)
    missing = [lang for lang in langs if lang not in acc]
    if missing:
        raise ValueError(f"{table}: no column for {missing} (columns: {sorted(acc)})")
    return {f"acc_{lang}": acc[lang] for lang in langs}


def bleu_measures(table: str, direction: str) -> Dict[str, float]:
    """{bleu_S_T, tok_bleu_S_T} from the first row of recipes/evaluate_mt.sh's table (the authors' greedy)."""
    with open(table, encoding="utf-8") as f:
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in f if line.startswith("|")]
    if len(rows) < 3 or rows[0][0] != "protocol":
        raise ValueError(f"{table}: not a table of recipes/evaluate_mt.sh")
    s, t = direction.split("-")
    return {f"bleu_{s}_{t}": float(rows[2][1]), f"tok_bleu_{s}_{t}": float(rows[2][2])}


def beats_copy_share(hyps: Sequence[str], srcs: Sequence[str], refs: Sequence[str]) -> float:
    """% of sentences whose translation has a higher sentence BLEU against the reference than the source
    copied unchanged (ties count as not beating it): does the model translate, or still copy?"""
    import sacrebleu

    if not (len(hyps) == len(srcs) == len(refs)) or not refs:
        raise ValueError(f"beats_copy_share: {len(hyps)} hypotheses, {len(srcs)} sources, {len(refs)} references")
    wins = sum(sacrebleu.sentence_bleu(h, [r]).score > sacrebleu.sentence_bleu(s, [r]).score
               for h, s, r in zip(hyps, srcs, refs))
    return 100.0 * wins / len(refs)


def bleu_over_shifted(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus sacreBLEU against the references minus corpus sacreBLEU against the same references shifted by
    one sentence (each hypothesis scored against the next sentence's reference). The shifted references keep
    every n-gram statistic of the text and break only the pairing, so the difference is the BLEU that the
    source explains: about 0 for a model that writes fluent target text whatever its input (a decoder that
    ignores the encoder), which plain BLEU cannot tell from a weak translator. Neighbouring test sentences
    often share words (one chapter), so this is a lower bound."""
    import sacrebleu

    if len(hyps) != len(refs) or len(refs) < 2:
        raise ValueError(f"bleu_over_shifted: {len(hyps)} hypotheses, {len(refs)} references (needs >= 2 pairs)")
    shifted = list(refs[1:]) + list(refs[:1])
    return sacrebleu.corpus_bleu(list(hyps), [list(refs)]).score - sacrebleu.corpus_bleu(list(hyps), [shifted]).score


def _text(path: str) -> List[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing")
    with open(path, encoding="utf-8", newline="\n") as f:
        return [line.rstrip("\n") for line in f]


def label_raw(raw: str, out: str, train_lang: str, langs: Sequence[str]) -> List[str]:
    """The prepare_xnli raw layout (``{split}.{lang}.input0`` / ``.label``, ``labels.txt``) from a raw folder
    whose monolingual files have ``{split}.{lang}.label`` beside them: train on ``train_lang`` only, valid and
    test on every language of ``langs`` that has labelled valid and test files. Returns those languages;
    raises ValueError (naming the file) when ``train_lang`` has no labelled training text."""
    def labelled(split: str, lang: str) -> bool:
        return all(os.path.isfile(os.path.join(raw, f"{split}.{lang}{x}")) for x in ("", ".label"))

    if not labelled("train", train_lang):
        raise ValueError(f"{raw}/train.{train_lang}.label: missing, so there is nothing to train a classifier on")
    eval_langs = [lang for lang in langs if labelled("valid", lang) and labelled("test", lang)]
    files = [("train", train_lang)] + [(split, lang) for lang in eval_langs for split in ("valid", "test")]
    labels: Dict[str, None] = {}
    os.makedirs(out, exist_ok=True)
    for split, lang in files:
        text, tags = (_text(os.path.join(raw, f"{split}.{lang}{x}")) for x in ("", ".label"))
        if len(text) != len(tags) or not text:
            raise ValueError(f"{raw}/{split}.{lang}.label: {len(tags)} labels for {len(text)} lines")
        labels.update(dict.fromkeys(tags))
        write_lines(os.path.join(out, f"{split}.{lang}.input0"), text)
        write_lines(os.path.join(out, f"{split}.{lang}.label"), tags)
    write_lines(os.path.join(out, "labels.txt"), sorted(labels))
    return eval_langs


# ---------------------------------------------------------------------------------------------- report
def build_report(directory: str, settings: str = "", plots: Sequence[str] = ()) -> str:
    """REPLICATION.md for OUT=``directory`` from OUT/results/plan.tsv and the record files beside it."""
    results = os.path.join(directory, "results")
    plan = read_plan(os.path.join(results, "plan.tsv"))
    records = read_records(sorted(p for p in glob.glob(os.path.join(results, "*.tsv"))
                                  if os.path.basename(p) != "plan.tsv"))
    data: Dict[str, Dict[str, Dict[str, Dict[int, float]]]] = {}
    for claim, measure, arm, seed, value in records:
        data.setdefault(claim, {}).setdefault(measure, {}).setdefault(arm, {})[seed] = value
    lines = ["# Replication of the XLM paper's orderings at small scale", ""]
    if settings:
        lines += [settings.strip(), ""]
    lines += ["Each cell: mean ± sample std over seeds (n). Verdict: **holds** when every neighbouring pair of arms "
              "is ordered as the paper says with a 95 % confidence interval of the paired difference (same seeds, "
              "t distribution) above 0; **holds in the means** when the means are ordered but some interval "
              "includes 0; **no** when some mean is reversed.", ""]
    for claim, runs, arms, note in plan:
        title, paper = PAPER.get(claim, (claim, "-"))
        lines += [f"## ({claim}) {title}", "", f"Paper: {paper}.", ""]
        if not runs:
            lines += [f"**Skipped**: {note}.", ""]
            continue
        if note:
            lines += [note, ""]
        measures = data.get(claim, {})
        if not measures:
            lines += ["**No results recorded** (did its stages run?).", ""]
            continue
        lines += ["| measure | better | " + " | ".join(arms) + " | ordering (worst -> best) | paired differences |",
                  "|---|---|" + "---:|" * len(arms) + "---|---|"]
        for measure in sorted(measures):
            by_arm = measures[measure]
            cells = []
            for arm in arms:
                values = [by_arm[arm][s] for s in sorted(by_arm.get(arm, {}))]
                if values:
                    m, sd = mean_std(values)
                    cells.append(f"{fmt(m)} ± {fmt(sd)} ({len(values)})")
                else:
                    cells.append("-")
            verdict, texts = comparison(measure, arms, by_arm)
            lines.append(f"| {measure} | {better(measure)} | " + " | ".join(cells) + f" | {verdict} | "
                         + "; ".join(texts) + " |")
        lines.append("")
    if plots:
        lines += ["## Curves", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots] + [""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- curves
_RUN_PATH = re.compile(r"/([^/]+?)[/-]s(\d+)/[^/]+$")  # .../ARM/sSEED/train.log or .../ARM-sSEED/train.log


def read_curve(log: str, metric: str) -> List[Tuple[float, float]]:
    """(num_updates, metric) of the ``valid on 'valid' subset`` lines of a fairseq training log (``curves``'
    reader); none for a log without validations."""
    try:
        return list(zip(*series(read_validations(log), metric)))
    except (ValueError, FileNotFoundError):
        return []


def plot_curves(directory: str, title: str, pattern: str, metric: str) -> Optional[str]:
    """OUT/curves-TITLE.png: ``metric`` of the training logs matching ``pattern`` (.../ARM/sSEED/train.log or
    .../ARM-sSEED/train.log),
    mean over seeds per arm against updates. None when matplotlib is missing or nothing matched."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    curves: Dict[str, List[List[Tuple[int, float]]]] = {}
    for log in sorted(glob.glob(os.path.join(directory, pattern))):
        m = _RUN_PATH.search(log)
        points = read_curve(log, metric)
        if m and points:
            curves.setdefault(m.group(1), []).append(points)
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, runs in sorted(curves.items()):
        steps = sorted({u for run in runs for u, _ in run})
        means = []
        for u in steps:
            vals = [v for run in runs for uu, v in run if uu == u]
            means.append(sum(vals) / len(vals))
        ax.plot(steps, means, marker="o", label=f"{arm} ({len(runs)} seeds)")
    ax.set_xlabel("updates")
    ax.set_ylabel(f"{metric} (valid, mean over seeds)")
    if "ppl" in metric:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    path = os.path.join(directory, f"curves-{re.sub(r'[^A-Za-z0-9_-]+', '_', title)}.png")
    tmp = f"{path}.tmp{os.getpid()}.png"
    fig.savefig(tmp, dpi=80, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------------------ CLI
def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fairseq_xlm.cli.replicate", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="one job's numbers -> a record file")
    rec.add_argument("--out", required=True, help="record file to write (atomically)")
    rec.add_argument("--claim", required=True)
    rec.add_argument("--arm", required=True)
    rec.add_argument("--seed", required=True, type=int)
    kinds = rec.add_subparsers(dest="kind", required=True)
    k = kinds.add_parser("genre", help="zero-shot accuracies of an evaluate_xnli table")
    k.add_argument("table")
    k.add_argument("--langs", required=True, help="languages to record, e.g. es,ny")
    k = kinds.add_parser("ppl", help="a perplexity of a fairseq-validate log (its 'test' subset line)")
    k.add_argument("log")
    k.add_argument("--metric", required=True, help="e.g. clm_ppl_ny; recorded as ppl_LANG")
    k = kinds.add_parser("bleu", help="both BLEUs of recipes/evaluate_mt.sh's table")
    k.add_argument("table")
    k.add_argument("--direction", required=True, help="SRC-TGT")
    k = kinds.add_parser("retrieval", help="both P@1 of python -m fairseq_xlm.cli.evaluate_retrieval --json")
    k.add_argument("result")
    k = kinds.add_parser("copy", help="share of sentences whose translation beats copying the source, and the "
                         "BLEU the source explains (against the references minus against them shifted by one)")
    k.add_argument("hyp")
    k.add_argument("src")
    k.add_argument("ref")
    k.add_argument("--direction", required=True, help="SRC-TGT")
    lab = sub.add_parser("label-raw", help="raw {split}.{lang}(.label) -> the classification raw layout")
    lab.add_argument("--raw", required=True)
    lab.add_argument("--out", required=True)
    lab.add_argument("--train-lang", required=True)
    lab.add_argument("--langs", required=True, help="candidate evaluation languages")
    rep = sub.add_parser("report", help="OUT/results/*.tsv -> OUT/REPLICATION.md (+ curves)")
    rep.add_argument("--dir", required=True, help="the study's folder (OUT)")
    rep.add_argument("--settings", default="", help="text put under the title (settings, commands, machine)")
    rep.add_argument("--curve", action="append", default=[], help="TITLE:GLOB:METRIC (GLOB relative to --dir)")
    return parser


def record(args) -> Dict[str, float]:
    """The measures of one job (see ``get_parser``), written to ``args.out``."""
    if args.kind == "genre":
        values = genre_measures(args.table, [x for x in args.langs.split(",") if x])
    elif args.kind == "ppl":
        found = parse_valid_log(args.log, "test")
        if args.metric not in found:
            raise ValueError(f"{args.log}: no {args.metric} in its test line (has {sorted(found)})")
        values = {f"ppl_{args.metric.rsplit('_', 1)[-1]}": found[args.metric]}
    elif args.kind == "bleu":
        values = bleu_measures(args.table, args.direction)
    elif args.kind == "retrieval":
        values = retrieval_measures(args.result)
    else:
        s, t = args.direction.split("-")
        hyps, refs = _text(args.hyp), _text(args.ref)
        values = {f"beats_copy_{s}_{t}": beats_copy_share(hyps, _text(args.src), refs),
                  f"bleu_over_shifted_{s}_{t}": bleu_over_shifted(hyps, refs)}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_lines(args.out, [f"{args.claim}\t{m}\t{args.arm}\t{args.seed}\t{v:.6g}" for m, v in values.items()])
    return values


def main(argv: Optional[Sequence[str]] = None):
    """CLI entry point; bad input exits with one clear message."""
    args = get_parser().parse_args(argv)
    try:
        if args.command == "record":
            values = record(args)
            print(" ".join(f"{k}={v:.4g}" for k, v in values.items()))
            return values
        if args.command == "label-raw":
            langs = label_raw(args.raw, args.out, args.train_lang, [x for x in args.langs.split(",") if x])
            print(",".join(langs))
            return langs
        plots = []
        for spec in args.curve:
            parts = spec.split(":")
            if len(parts) != 3:
                raise ValueError(f"--curve {spec!r}: expected TITLE:GLOB:METRIC")
            path = plot_curves(args.dir, *parts)
            if path:
                plots.append(path)
        text = build_report(args.dir, args.settings, plots)
        path = os.path.join(args.dir, "REPLICATION.md")
        write_lines(path, text.rstrip("\n").split("\n"))
        print(text, end="")
        return path
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}")


if __name__ == "__main__":
    setup_logging()
    main(sys.argv[1:])
