"""Accuracy of a fine-tuned ``xnli`` checkpoint on every language's test set, as a row of the XNLI table.

    python -m fairseq_xlm.evaluate_xnli CHECKPOINT DATA [--langs en,es] [--split test] [--name RUN] [--out table.md]

prints a markdown table (one column per language, plus ``avg``, the mean over languages) and, with
``--out``, appends the row to that file (writing the header first if the file is new; a file whose header
has other languages is an error rather than a misaligned table).
"""

import argparse
import logging
import os
import sys
from typing import Dict, List, Optional, Sequence

import torch

from fairseq_xlm.cli import setup_logging


def evaluate(checkpoint: str, data: str, langs: Optional[List[str]] = None, split: str = "test",
             batch_size: int = 64) -> Dict[str, float]:
    """{lang: accuracy in %} of ``checkpoint`` on ``split`` of ``data`` (languages in the model's order)."""
    import fairseq_xlm  # noqa: F401  (registers the task, model and safe checkpoint loading)
    from fairseq import checkpoint_utils, utils

    from fairseq_xlm.tasks.xnli import XlmXnliTask, classification_logits

    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint")
    overrides = {"data": data, "eval_langs": ",".join(langs) if langs else ""}
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint], arg_overrides=overrides)
    if not isinstance(task, XlmXnliTask):
        raise ValueError(f"{checkpoint}: trained with task {type(task).__name__}, not a fine-tuned xnli checkpoint")
    model = models[0].eval()
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        model.cuda()
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
    return {lang: 100.0 * int(correct[i]) / int(total[i]) for i, lang in enumerate(task.langs) if total[i] > 0}


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
    new = (old or [header, sep]) + [row]
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(new) + "\n")
    os.replace(tmp, path)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """CLI entry point; returns {lang: accuracy}."""
    parser = argparse.ArgumentParser(prog="python -m fairseq_xlm.evaluate_xnli", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="fine-tuned checkpoint (fairseq-train --task xnli)")
    parser.add_argument("data", help="the data-bin the model was fine-tuned on (with its --cls-subdir)")
    parser.add_argument("--langs", default="", help="languages to evaluate; default: every one with data")
    parser.add_argument("--split", default="test", help="split to evaluate (test, valid)")
    parser.add_argument("--name", default=None, help="row name (default: the checkpoint path)")
    parser.add_argument("--out", default=None, help="markdown file to append the row to")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per batch")
    args = parser.parse_args(argv)
    from fairseq_xlm.data.layout import parse_langs

    try:
        langs = parse_langs(args.langs) if args.langs else None
        scores = evaluate(args.checkpoint, args.data, langs, args.split, args.batch_size)
        lines = table_lines(args.name or args.checkpoint, scores)
        if args.out:
            append_row(args.out, lines)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}")
    print("\n".join(lines))
    return scores


if __name__ == "__main__":
    setup_logging(logging.WARNING, sys.stderr)
    main(sys.argv[1:])
