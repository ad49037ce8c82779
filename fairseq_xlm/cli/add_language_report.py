"""The table of recipes/add_language.sh: OUT/RESULTS.md from what its runs leave.

    python -m fairseq_xlm.cli.add_language_report --dir OUT [--seeds 1,2,3] [--settings TEXT]

Reads OUT/eval/{arm}-s{seed}.log (fairseq-validate on the test split; arms pre, noext, ext, joint) and
OUT/genre/table.md (evaluate_xnli rows named {arm}-s{seed}). Per-token perplexities of models with different
vocabularies are not comparable, so each is also given in bits per word: ``log2(ppl) * tokens / words`` with
the tokens (``</s>`` included) of the arm's binarized test split and the words (+1 per sentence for ``</s>``)
of the raw test text; this rescales the mean masked-token loss, an approximation that holds as far as a
masked token's loss does not depend on the segmentation.
"""

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from fairseq_xlm.cli.curves import METRIC, VALID_LINE
from fairseq_xlm.data.manifest import read_index
from fairseq_xlm.paired import mean_std

ARMS = {"pre": "en+es model, before (PRE updates)", "noext": "(i) ny through the old BPE + CONT updates",
        "ext": "(ii) extended by add_language + CONT updates", "joint": "(iii) en+es+ny from the start"}
LANGS = ("en", "es", "ny")


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


def report(out: str, seeds: Sequence[str], settings: str) -> str:
    """RESULTS.md's text."""
    genre = genre_rows(os.path.join(out, "genre", "table.md"))
    lines = ["# Adding ny to an en+es XLM (recipes/add_language.sh)", "",
             f"Settings: {settings}; seeds {','.join(seeds)} (mean ± std over the seeds that finished).", "",
             "| arm | seeds | " + " | ".join(f"MLM {lang}: ppl / bits per word" for lang in LANGS)
             + " | " + " | ".join(f"genre acc {lang}" for lang in LANGS) + " |",
             "|---|---:|" + "---:|" * (2 * len(LANGS))]
    for arm, title in ARMS.items():
        done = [s for s in seeds if validation(os.path.join(out, "eval", f"{arm}-s{s}.log"))]
        ppl_cells, acc_cells = [], []
        for lang in LANGS:
            tok, word = [], []
            for s in done:
                ppl = validation(os.path.join(out, "eval", f"{arm}-s{s}.log")).get(f"mlm_ppl_{lang}")
                ratio = tokens_per_word(out, arm, s, lang)
                if ppl is not None:
                    tok.append(ppl)
                    if ratio is not None:
                        word.append(np.log2(ppl) * ratio)
            ppl_cells.append(f"{cell(tok)} / {cell(word)}" if tok else "–")
            acc_cells.append(cell([genre[f"{arm}-s{s}"][lang] for s in seeds
                                   if lang in genre.get(f"{arm}-s{s}", {})]))
        lines.append(f"| {title} | {len(done)} | " + " | ".join(ppl_cells + acc_cells) + " |")
    lines += ["", "Tokens per word of the test split (</s> counted once per sentence):", "",
              "| data-bin | " + " | ".join(LANGS) + " |", "|---|" + "---:|" * len(LANGS)]
    for arm in ("pre", "noext", "ext", "joint"):
        ratios = [tokens_per_word(out, arm, seeds[0], lang) for lang in LANGS]
        lines.append(f"| {arm} | " + " | ".join("–" if r is None else f"{r:.2f}" for r in ratios) + " |")
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
