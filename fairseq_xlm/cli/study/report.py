"""What a study's records become: REPLICATION.md (each claim's arms over seeds, paired comparisons of
neighbouring arms, the verdict), the paper's tables (paper | ours | arms) and the validation curves.

Both read ``OUT/results/plan.tsv`` (per claim: run or skipped, its arms in the order the paper expects, a
note) and the record files beside it (``gather.read_records``), so they work on a finished study, on one
still running (missing cells show as ``-``) and on hand-made files.
"""

import glob
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_xlm.cli.curves import read_validations, series
from fairseq_xlm.cli.study.gather import Collected, collect, read_plan, read_records
from fairseq_xlm.paired import better, comparison, fmt, mean_std

# What the paper reports for each claim (Lample & Conneau 2019): (title, the paper's numbers in words).
PAPER = {
    "a": ("TLM adds to MLM for cross-lingual transfer", "XNLI zero-shot accuracy 71.5 (MLM) -> 75.1 (MLM+TLM)"),
    "b": ("pretraining helps supervised MT", "WMT'16 ro-en: about +4 BLEU from an MLM initialisation"),
    "c": ("MLM init beats CLM init beats none for unsupervised MT", "en-fr, de-en, ro-en: MLM > CLM > no init"),
    "d": ("a high-resource language lowers a low-resource language's perplexity",
          "Nepali perplexity 157 (alone) -> 109 (+ English, Hindi)"),
    "e": ("cross-lingual embeddings align (beyond the paper)", "-"),
}
# The paper's number for an arm, where the paper has that arm: (what it measures, {arm: number}). Arms of
# claim (d) are positional (LOW alone, + one language, + all), so they are keyed by position.
PAPER_ARMS = {
    "a": ("XNLI zero-shot accuracy, average of 15 languages (Table 1)", {"mlm": 71.5, "mlm_tlm": 75.1}),
    "c": ("WMT'14 en->fr BLEU, unsupervised (Table 2; fr->en 15.8 / 30.0 / 33.3)",
          {"random": 13.0, "clm": 30.4, "mlm": 33.4}),
    "d": ("Nepali LM perplexity: ne alone, + en, + en + hi (Table 4)", {0: 157.2, 1: 140.1, 2: 109.3}),
}


def study_records(directory: str) -> Tuple[List[Tuple[str, bool, List[str], str]], Collected]:
    """The plan and the collected records of the study in ``directory`` (OUT)."""
    results = os.path.join(directory, "results")
    plan = read_plan(os.path.join(results, "plan.tsv"))
    paths = sorted(p for p in glob.glob(os.path.join(results, "*.tsv")) if os.path.basename(p) != "plan.tsv")
    return plan, collect(read_records(paths))


def _cell(by_arm: Dict[str, Dict[int, float]], arm: str) -> str:
    values = [by_arm[arm][s] for s in sorted(by_arm.get(arm, {}))]
    if not values:
        return "-"
    m, sd = mean_std(values)
    return f"{fmt(m)} ± {fmt(sd)} ({len(values)})"


def build_report(directory: str, settings: str = "", plots: Sequence[str] = ()) -> str:
    """REPLICATION.md for OUT=``directory`` from OUT/results/plan.tsv and the record files beside it."""
    plan, data = study_records(directory)
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
            verdict, texts = comparison(measure, arms, by_arm)
            lines.append(f"| {measure} | {better(measure)} | " + " | ".join(_cell(by_arm, a) for a in arms)
                         + f" | {verdict} | " + "; ".join(texts) + " |")
        lines.append("")
    if plots:
        lines += ["## Curves", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots] + [""]
    return "\n".join(lines)


def paper_tables(directory: str) -> str:
    """The paper's tables beside ours: per claim that ran, one row per arm (in the paper's expected order) with
    the paper's number where the paper has that arm and ours (mean ± std over seeds) per measure, then the
    ordering verdict per measure."""
    plan, data = study_records(directory)
    lines = ["# The paper's tables, ours beside them", "",
             "Paper: Lample & Conneau 2019, at the paper's scale. Ours: this study's small-scale runs, mean ± "
             "sample std over seeds (n); the arms are compared as orderings (REPLICATION.md has the paired "
             "differences).", ""]
    for claim, runs, arms, note in plan:
        title, paper = PAPER.get(claim, (claim, "-"))
        lines += [f"## ({claim}) {title}", ""]
        if not runs:
            lines += [f"Skipped: {note}.", ""]
            continue
        what, numbers = PAPER_ARMS.get(claim, (paper, {}))
        measures = sorted(data.get(claim, {}))
        lines += [f"Paper: {what}.", "",
                  "| arm | paper | " + " | ".join(f"ours: {m}" for m in measures) + " |",
                  "|---|---:|" + "---:|" * len(measures)]
        for k, arm in enumerate(arms):
            number = numbers.get(arm, numbers.get(k))
            lines.append(f"| {arm} | {'-' if number is None else number} | "
                         + " | ".join(_cell(data[claim][m], arm) for m in measures) + " |")
        if measures:
            lines.append("| ordering | " + ("expected" if numbers else "-") + " | "
                         + " | ".join(comparison(m, arms, data[claim][m])[0] for m in measures) + " |")
        lines.append("")
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
    .../ARM-sSEED/train.log), mean over seeds per arm against updates. None when matplotlib is missing or
    nothing matched."""
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
