"""The table of recipes/add_language.sh: OUT/RESULTS.md from what its runs leave.

    python -m fairseq_xlm.cli.add_language_report --dir OUT [--seeds 1,2,3] [--settings TEXT]

Reads OUT/eval/{arm}-s{seed}.log (fairseq-validate on the test split; arms pre, noext, ext, joint) and
OUT/genre/table.md (evaluate_xnli rows named {arm}-s{seed}). Per-token perplexities of models with different
vocabularies are not comparable, so each is also given in bits per word: ``log2(ppl) * tokens / words`` with
the tokens (``</s>`` included) of the arm's binarized test split and the words (+1 per sentence for ``</s>``)
of the raw test text; this rescales the mean masked-token loss, an approximation that holds as far as a
masked token's loss does not depend on the segmentation. Cells are mean ± sample std over the seeds; below the
table, the orderings (ii) better than (i) and (iii) better than (ii) on ny (bits per word, zero-shot genre
accuracy) as paired comparisons over the seeds both arms have (``paired.comparison``: the mean difference in
the better direction, its 95 % t interval and the paired t-test's p).
"""

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from fairseq_xlm.cli.curves import METRIC, VALID_LINE
from fairseq_xlm.data.manifest import read_index
from fairseq_xlm.paired import comparison, fmt, mean_std, paired_t

ARMS = {"pre": "en+es model, before (PRE updates)", "noext": "(i) ny through the old BPE + CONT updates",
        "ext": "(ii) extended by add_language + CONT updates", "joint": "(iii) en+es+ny from the start"}
LANGS = ("en", "es", "ny")
# (kind, arms from worse to better expected): the orderings the study is about
ORDERINGS = [("bpw", ("noext", "ext")), ("acc", ("noext", "ext")), ("bpw", ("ext", "joint")), ("acc", ("ext", "joint"))]
# kind -> (label, the measure's name for paired.comparison, whose better() reads lower-is-better from "ppl")
KINDS = {"bpw": ("ny bits per word", "mlm_ppl_ny"), "acc": ("ny genre accuracy", "genre_acc_ny")}


def data_dir(out: str, arm: str, seed: str) -> str:
    return {"pre": os.path.join(out, "old"), "joint": os.path.join(out, "joint")}.get(
        arm, os.path.join(out, f"s{seed}", arm))


def tokens_per_word(out: str, arm: str, seed: str, lang: str) -> Optional[float]:
    """Tokens of the binarized test split per raw word (both counting one </s> per sentence)."""
    prefix = os.path.join(data_dir(out, arm, seed), f"test.{lang}")
    if not os.path.isfile(prefix + ".idx"):
        return None
    _, sizes, _ = read_index(prefix)
    with open(os.path.join(out, "raw", f"test.{lang}"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    return float(np.sum(sizes)) / (sum(len(line.split()) for line in lines) + len(lines))


def validation(path: str) -> Dict[str, float]:
    """The metrics of the last ``valid on 'test' subset`` line of a fairseq-validate log."""
    found = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = VALID_LINE.search(line)
                if m:
                    found = {k: float(v) for k, v in METRIC.findall(m.group(2))}
    return found


def genre_rows(path: str) -> Dict[str, Dict[str, float]]:
    """{run name: {lang: accuracy}} of an evaluate_xnli markdown table."""
    rows, header = {}, []
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                if cells[0] == "model":
                    header = cells[1:]
                elif header and cells[0] and not cells[0].startswith("-"):
                    rows[cells[0]] = {h: float(c) for h, c in zip(header, cells[1:]) if c}
    return rows


def cell(values: List[float], digits: int = 1) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def measures(out: str, seeds: Sequence[str]):
    """({arm: seeds with a validation log}, {(arm, lang, kind): {seed: value}}) with kind ``ppl`` (per token),
    ``bpw`` (bits per word) and ``acc`` (genre accuracy)."""
    genre = genre_rows(os.path.join(out, "genre", "table.md"))
    done, values = {}, {}
    for arm in ARMS:
        done[arm] = [s for s in seeds if validation(os.path.join(out, "eval", f"{arm}-s{s}.log"))]
        for lang in LANGS:
            for s in done[arm]:
                ppl = validation(os.path.join(out, "eval", f"{arm}-s{s}.log")).get(f"mlm_ppl_{lang}")
                ratio = tokens_per_word(out, arm, s, lang)
                if ppl is not None:
                    values.setdefault((arm, lang, "ppl"), {})[s] = ppl
                    if ratio is not None:
                        values.setdefault((arm, lang, "bpw"), {})[s] = float(np.log2(ppl) * ratio)
            for s in seeds:
                if lang in genre.get(f"{arm}-s{s}", {}):
                    values.setdefault((arm, lang, "acc"), {})[s] = genre[f"{arm}-s{s}"][lang]
    return done, values


def orderings(values) -> List[str]:
    """One line per ``ORDERINGS`` entry: the verdict and the paired comparison over the common seeds."""
    lines = []
    for kind, arms in ORDERINGS:
        label, measure = KINDS[kind]
        verdict, texts = comparison(measure, arms, {arm: values.get((arm, "ny", kind), {}) for arm in arms})
        lines.append(f"- {ARMS[arms[1]].split(' ')[0]} better than {ARMS[arms[0]].split(' ')[0]} on {label} "
                     f"({'lower' if kind == 'bpw' else 'higher'} is better): **{verdict}**; {texts[0]}")
    return lines


def old_language_cost(values) -> List[str]:
    """What continued training with ny costs en and es: bits per word of (i) and (ii) minus the model before,
    paired over seeds (positive: worse)."""
    lines = []
    for arm in ("noext", "ext"):
        cells = []
        for lang in ("en", "es"):
            before, after = values.get(("pre", lang, "bpw"), {}), values.get((arm, lang, "bpw"), {})
            common = sorted(set(before) & set(after))
            if not common:
                cells.append(f"{lang} –")
                continue
            t = paired_t([before[s] for s in common], [after[s] for s in common])
            ci = f" [{fmt(t.diff - t.half_width)}, {fmt(t.diff + t.half_width)}], p={t.p:.2f}" if t.n > 1 else ""
            cells.append(f"{lang} {'+' if t.diff >= 0 else ''}{fmt(t.diff)}{ci}")
        lines.append(f"- {ARMS[arm].split(' ')[0]} minus the model before: " + "; ".join(cells))
    return lines


def report(out: str, seeds: Sequence[str], settings: str) -> str:
    """RESULTS.md's text."""
    done, values = measures(out, seeds)
    lines = ["# Adding ny to an en+es XLM (recipes/add_language.sh)", "",
             f"Settings: {settings}; seeds {','.join(seeds)} (mean ± std over the seeds that finished).", "",
             "| arm | seeds | " + " | ".join(f"MLM {lang}: ppl / bits per word" for lang in LANGS)
             + " | " + " | ".join(f"genre acc {lang}" for lang in LANGS) + " |",
             "|---|---:|" + "---:|" * (2 * len(LANGS))]
    for arm, title in ARMS.items():
        ppl_cells, acc_cells = [], []
        for lang in LANGS:
            tok = list(values.get((arm, lang, "ppl"), {}).values())
            word = list(values.get((arm, lang, "bpw"), {}).values())
            ppl_cells.append(f"{cell(tok)} / {cell(word)}" if tok else "–")
            acc_cells.append(cell(list(values.get((arm, lang, "acc"), {}).values())))
        lines.append(f"| {title} | {len(done[arm])} | " + " | ".join(ppl_cells + acc_cells) + " |")
    lines += ["", "Orderings on ny, paired over seeds (difference in the better direction, 95 % interval, "
              "paired t-test; 'holds': the interval excludes 0):", ""] + orderings(values)
    lines += ["", "What the old languages pay: bits per word after CONT updates minus before, paired over seeds "
              "(95 % interval, paired t-test):", ""] + old_language_cost(values)
    lines += ["", "Tokens per word of the test split (</s> counted once per sentence; mean over the seeds):", "",
              "| data-bin | " + " | ".join(LANGS) + " |", "|---|" + "---:|" * len(LANGS)]
    for arm in ("pre", "noext", "ext", "joint"):
        ratios = [[r for r in (tokens_per_word(out, arm, s, lang) for s in seeds) if r is not None] for lang in LANGS]
        lines.append(f"| {arm} | " + " | ".join(f"{np.mean(r):.2f}" if r else "–" for r in ratios) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Write OUT/RESULTS.md and print it."""
    p = argparse.ArgumentParser(prog="python -m fairseq_xlm.cli.add_language_report", description=__doc__.split("\n")[0])
    p.add_argument("--dir", required=True, help="OUT of recipes/add_language.sh")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    p.add_argument("--settings", default="", help="the recipe's settings, shown in the text")
    args = p.parse_args(argv)
    text = report(args.dir, [s for s in args.seeds.split(",") if s], args.settings)
    path = os.path.join(args.dir, "RESULTS.md")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
