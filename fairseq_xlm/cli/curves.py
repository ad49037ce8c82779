"""Learning curves as PNG (matplotlib), drawn from fairseq's own logs (``--log-format simple``: the
``valid on 'valid' subset | name value | ... | num_updates N`` lines every validation prints).

    python -m fairseq_xlm.cli.curves RUN=train.log [RUN=train.log ...] --metrics mlm_ppl_en,mlm_ppl_es \\
        --out curves.png [--title T] [--log-y]
    python -m fairseq_xlm.cli.curves --demo data-bin/demo        (the demo's figures, as its report draws them)

Every (run, metric) is one line over updates; the first run is drawn solid, the others dashed, one colour
per metric, so "pretrained vs random init" reads at a glance.
"""

import argparse
import logging
import os
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from . import setup_logging

# a fairseq log's validation line and its "| name value" fields (also read by the demo's report)
VALID_LINE = re.compile(r"valid on '([^']+)' subset(.*)$")
METRIC = re.compile(r"\|\s*([A-Za-z_][\w\-]*)\s+(-?[0-9.]+(?:e[-+]?\d+)?)\s*(?=\||$)")
STYLES = ["-", "--", ":", "-."]

# The demo's figures: (file, title, y label, log scale, metrics, {run label: log path under DIR/runs}).
DEMO_FIGURES = [
    ("curves-pretraining.png", "MLM / TLM pretraining: validation perplexity", "perplexity", True,
     ["mlm_ppl_en", "mlm_ppl_es", "tlm_ppl_en-es"], {"XLM pretraining": "pretrain/train.log"}),
    ("curves-umt.png", "Unsupervised MT: validation BLEU (sacreBLEU, greedy)", "BLEU", False,
     ["bleu_en_es", "bleu_es_en"], {"XLM pretrained": "umt-xlm/train.log", "random init": "umt-random/train.log"}),
    ("curves-genre.png", "Genre classification (trained on en): validation accuracy", "accuracy, %", False,
     ["accuracy_en", "accuracy_es"], {"XLM pretrained": "genre/checkpoints/xlm/train.log",
                                                        "random init": "genre/checkpoints/random/train.log"}),
]


def read_validations(path: str, subset: str = "valid") -> List[Dict[str, float]]:
    """The metrics of every ``valid on 'SUBSET' subset`` line of a fairseq log, in order (with num_updates)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such log")
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = VALID_LINE.search(line)
            if m and m.group(1) == subset:
                metrics = {k: float(v) for k, v in METRIC.findall(m.group(2))}
                if "num_updates" in metrics:
                    out.append(metrics)
    if not out:
        raise ValueError(f"{path}: no \"valid on '{subset}' subset ... num_updates N\" line (run fairseq with "
                         f"--log-format simple and at least one validation)")
    return out


def series(rows: Sequence[Dict[str, float]], metric: str) -> Tuple[List[float], List[float]]:
    """(updates, values) of ``metric``; a validation repeated at the same update keeps its last value."""
    points = {row["num_updates"]: row[metric] for row in rows if metric in row}
    xs = sorted(points)
    return xs, [points[x] for x in xs]


def plot(runs: Dict[str, str], metrics: Sequence[str], out: str, title: str = "", ylabel: str = "",
         log_y: bool = False) -> str:
    """Draw every metric of every run ({label: log path}) over updates into ``out`` (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    logs = {label: read_validations(path) for label, path in runs.items()}
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=100)
    drawn = 0
    try:
        for r, (label, rows) in enumerate(logs.items()):
            for m, metric in enumerate(metrics):
                xs, ys = series(rows, metric)
                if xs:
                    ax.plot(xs, ys, STYLES[r % len(STYLES)], color=f"C{m}", marker="o", markersize=3,
                            label=f"{metric} ({label})" if len(logs) > 1 else metric)
                    drawn += 1
        if not drawn:
            raise ValueError(f"none of the metrics {list(metrics)} is in the validation lines of "
                             f"{', '.join(runs.values())}")
        ax.set(xlabel="updates", ylabel=ylabel, title=title)
        if log_y:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        tmp = f"{out}.tmp{os.getpid()}.png"
        fig.savefig(tmp)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
    return out


def demo_figures(directory: str) -> List[Tuple[str, str]]:
    """The demo's learning curves into DIRECTORY (from the logs under DIRECTORY/runs): [(title, file name)]."""
    made = []
    for name, title, ylabel, log_y, metrics, logs in DEMO_FIGURES:
        runs = {label: os.path.join(directory, "runs", path) for label, path in logs.items()}
        plot(runs, metrics, os.path.join(directory, name), title, ylabel, log_y)
        made.append((title, name))
    return made


def main(argv: Optional[Sequence[str]] = None) -> List[str]:
    """CLI entry point; returns the files written. Bad input exits 1 with one line."""
    parser = argparse.ArgumentParser(prog="python -m fairseq_xlm.cli.curves", description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="*", metavar="RUN=LOG", help="a run's label and its fairseq log")
    parser.add_argument("--metrics", help="comma-separated validation metrics to draw (e.g. mlm_ppl_en,bleu_en_es)")
    parser.add_argument("--out", help="the PNG to write")
    parser.add_argument("--title", default="", help="figure title")
    parser.add_argument("--ylabel", default="", help="y axis label")
    parser.add_argument("--log-y", action="store_true", help="logarithmic y axis (perplexities)")
    parser.add_argument("--demo", metavar="DIR", help="draw the demo's figures into DIR from DIR/runs instead")
    args = parser.parse_args(argv)
    try:
        if args.demo:
            return [os.path.join(args.demo, name) for _, name in demo_figures(args.demo)]
        if not args.logs or not args.metrics or not args.out:
            raise ValueError("give RUN=LOG arguments, --metrics and --out (or --demo DIR)")
        runs = {}
        for item in args.logs:
            label, sep, path = item.partition("=")
            if not sep or not label or not path:
                raise ValueError(f"{item!r}: expected RUN=LOG, e.g. pretrained=checkpoints/train.log")
            runs[label] = path
        metrics = [m for m in args.metrics.split(",") if m]
        return [plot(runs, metrics, args.out, args.title, args.ylabel, args.log_y)]
    except (OSError, ValueError) as err:
        print(f"fairseq_xlm.cli.curves: error: {' '.join(str(err).split())}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    setup_logging(logging.WARNING, sys.stderr)  # importing fairseq sets the root logger to DEBUG: matplotlib's 150 lines
    main()
