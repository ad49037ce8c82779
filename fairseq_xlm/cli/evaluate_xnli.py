"""Accuracy of fine-tuned ``xnli`` checkpoints on every language's test set, as rows of the XNLI table.

    python -m fairseq_xlm.cli.evaluate_xnli CHECKPOINT DATA [--langs en,es] [--split test] [--name RUN] [--out table.md]
    python -m fairseq_xlm.cli.evaluate_xnli CKPT_1 CKPT_2 ... DATA [--sweep-out sweep.md] [--out table.md]

One checkpoint: prints a markdown table (one column per language, plus ``avg``, the mean over languages)
and, with ``--out``, appends the row to that file (writing the header first if the file is new; a file whose
header has other languages is an error rather than a misaligned table).

Several checkpoints (a sweep, e.g. recipes/xnli.sh SWEEP=1): each is scored on valid and test; the one with
the best mean valid accuracy is selected (the authors' model selection), its test row goes to ``--out``, and
the sweep table (every run with its lr, batch, valid mean and test accuracies, then a row of per-language
best-of-sweep numbers, labelled as such) is printed and written to ``--sweep-out``. Runs are named by
their checkpoint's folder.
"""

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from fairseq_xlm.cli import setup_logging


def evaluate(checkpoint: str, data: str, langs: Optional[List[str]] = None, split: str = "test",
             batch_size: int = 64) -> Dict[str, float]:
    """{lang: accuracy in %} of ``checkpoint`` on ``split`` of ``data`` (languages in the model's order)."""
    return evaluate_run(checkpoint, data, langs, (split,), batch_size).scores[split]


@dataclass
class RunScores:
    """Accuracies of one fine-tuned checkpoint, {split: {lang: %}}, with the run's learning rate and batch size."""

    name: str
    scores: Dict[str, Dict[str, float]]
    lr: float
    batch_size: int

    def mean(self, split: str) -> float:
        """Mean over languages (the table's ``avg``)."""
        values = list(self.scores[split].values())
        return sum(values) / len(values)


def load_fine_tuned(checkpoint: str, overrides: dict, task_class, name: str):
    """(model in eval mode, on the GPU when there is one; cfg; task) of a fine-tuned checkpoint of ``task_class``."""
    import fairseq_xlm  # noqa: F401  (registers the tasks, models and safe checkpoint loading)
    from fairseq import checkpoint_utils

    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint")
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides=overrides)
    if not isinstance(task, task_class):
        raise ValueError(f"{checkpoint}: trained with task {type(task).__name__}, not a fine-tuned {name} checkpoint")
    model = models[0].eval()
    if torch.cuda.is_available():
        model.cuda()
    return model, cfg, task


def evaluate_run(checkpoint: str, data: str, langs: Optional[List[str]] = None, splits: Sequence[str] = ("test",),
                 batch_size: int = 64) -> RunScores:
    """Accuracy per language of ``checkpoint`` on each of ``splits``; the run is named by its folder."""
    from fairseq import utils

    from fairseq_xlm.tasks.xnli import XlmXnliTask, classification_logits

    overrides = {"data": data, "eval_langs": ",".join(langs) if langs else ""}
    model, cfg, task = load_fine_tuned(checkpoint, overrides, XlmXnliTask, "xnli")
    use_cuda = next(model.parameters()).is_cuda
    scores = {}
    for split in splits:
        task.load_dataset(split)
        batches = task.get_batch_iterator(task.dataset(split), max_sentences=batch_size, num_workers=0,
                                          seed=1).next_epoch_itr(shuffle=False)
        correct = torch.zeros(len(task.langs), dtype=torch.long)
        total = torch.zeros(len(task.langs), dtype=torch.long)
        with torch.no_grad():
            for sample in batches:
                if use_cuda:
                    sample = utils.move_to_cuda(sample)
                hits = classification_logits(model, sample["net_input"]).argmax(-1).eq(sample["target"]).long()
                lang = sample["lang"].cpu()
                correct.index_add_(0, lang, hits.cpu())
                total.index_add_(0, lang, torch.ones_like(lang))
        scores[split] = {lang: 100.0 * int(correct[i]) / int(total[i])
                         for i, lang in enumerate(task.langs) if total[i] > 0}
    name = os.path.basename(os.path.dirname(os.path.abspath(checkpoint)))
    # a converted checkpoint (convert hf-to-fairseq) has no training settings: lr and batch 0
    lr = ((cfg.get("optimization") or {}).get("lr") or [0.0])[0]
    return RunScores(name, scores, float(lr), int((cfg.get("dataset") or {}).get("batch_size") or 0))


def select_run(runs: Sequence[RunScores]) -> RunScores:
    """The run with the best mean valid accuracy (the first of equals)."""
    return max(runs, key=lambda run: run.mean("valid"))


def sweep_lines(runs: Sequence[RunScores]) -> List[str]:
    """The sweep table: a row per run (lr, batch, valid mean, test per language and mean), the selected run
    marked, then the per-language best of the sweep (each language's test accuracy from the run with the best
    valid accuracy in that language: several models, so not a result of one configuration)."""
    langs = list(runs[0].scores["test"])
    if any(list(run.scores["test"]) != langs or list(run.scores["valid"]) != langs for run in runs):
        raise ValueError("the runs of a sweep must be scored on the same languages")
    chosen = select_run(runs)
    lines = ["| run | lr | batch | valid avg | " + " | ".join(f"test {lang}" for lang in langs) + " | test avg |",
             "|---|---:|---:|---:|" + "---:|" * (len(langs) + 1)]
    for run in runs:
        name = f"**{run.name}** (selected: best valid avg)" if run is chosen else run.name
        tests = " | ".join(f"{run.scores['test'][lang]:.1f}" for lang in langs)
        lines.append(f"| {name} | {run.lr:g} | {run.batch_size} | {run.mean('valid'):.1f} | {tests} | "
                     f"{run.mean('test'):.1f} |")
    best = {lang: max(runs, key=lambda run: run.scores["valid"][lang]).scores["test"][lang] for lang in langs}
    lines.append("| per-language best of sweep (each language's run chosen on its own valid accuracy; not one "
                 "model) | | | | " + " | ".join(f"{best[lang]:.1f}" for lang in langs)
                 + f" | {sum(best.values()) / len(best):.1f} |")
    return lines


def _write(path: str, lines: List[str]) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def table_lines(name: str, scores: Dict[str, float]) -> List[str]:
    """Header, separator and row of the markdown table for one run (``avg`` = mean over languages)."""
    langs = list(scores)
    avg = sum(scores.values()) / len(scores)
    header = "| model | " + " | ".join(langs) + " | avg |"
    sep = "|---|" + "---:|" * (len(langs) + 1)
    row = f"| {name} | " + " | ".join(f"{scores[lang]:.1f}" for lang in langs) + f" | {avg:.1f} |"
    return [header, sep, row]


def append_row(path: str, lines: List[str]) -> None:
    """Append the row to the table at ``path`` (atomically); a new file gets the header first."""
    header, sep, row = lines
    old = []
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            old = f.read().splitlines()
    if old and old[0].strip() != header:
        raise ValueError(f"{path}: its header {old[0].strip()!r} has other columns than {header!r}; "
                         f"use another --out for these languages")
    _write(path, (old or [header, sep]) + [row])


def _sweep(checkpoints: List[str], data: str, langs, batch_size: int) -> Tuple[RunScores, List[str]]:
    runs = [evaluate_run(ckpt, data, langs, ("valid", "test"), batch_size) for ckpt in checkpoints]
    if len({run.name for run in runs}) != len(runs):
        raise ValueError(f"the checkpoints of a sweep must lie in folders of different names: {checkpoints}")
    return select_run(runs), sweep_lines(runs)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """CLI entry point; returns {lang: test accuracy} (of the selected run for a sweep)."""
    parser = argparse.ArgumentParser(prog="python -m fairseq_xlm.cli.evaluate_xnli", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                        help="fine-tuned checkpoint(s) (fairseq-train --task xnli); several = a sweep")
    parser.add_argument("data", help="the data-bin the model was fine-tuned on (with its --cls-subdir)")
    parser.add_argument("--langs", default="", help="languages to evaluate; default: every one with data")
    parser.add_argument("--split", default="test", help="split to evaluate (test, valid); a sweep uses both")
    parser.add_argument("--name", default=None, help="row name (default: the checkpoint path; for a sweep, the "
                                                      "selected run's folder)")
    parser.add_argument("--out", default=None, help="markdown file to append the (selected) row to")
    parser.add_argument("--sweep-out", default=None, help="markdown file to write the sweep table to")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per batch")
    args = parser.parse_args(argv)
    from fairseq_xlm.data.layout import parse_langs

    try:
        langs = parse_langs(args.langs) if args.langs else None
        if len(args.checkpoints) > 1 or args.sweep_out:
            chosen, sweep = _sweep(args.checkpoints, args.data, langs, args.batch_size)
            scores = chosen.scores["test"]
            lines = table_lines(args.name or chosen.name, scores)
            if args.sweep_out:
                _write(args.sweep_out, sweep)
            print("\n".join(sweep) + "\n")
        else:
            scores = evaluate(args.checkpoints[0], args.data, langs, args.split, args.batch_size)
            lines = table_lines(args.name or args.checkpoints[0], scores)
        if args.out:
            append_row(args.out, lines)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}")
    print("\n".join(lines))
    return scores


if __name__ == "__main__":
    setup_logging(logging.WARNING, sys.stderr)
    main(sys.argv[1:])
