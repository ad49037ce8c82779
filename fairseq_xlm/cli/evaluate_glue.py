"""Scores of a fine-tuned ``xlm_glue`` checkpoint on labelled splits, and GLUE submission files for the
unlabelled test sets.

    python -m fairseq_xlm.cli.evaluate_glue CHECKPOINT DATA [--splits valid,test] [--submission-dir OUT]

A labelled split prints the authors' scores (``fairseq_xlm.data.glue.glue_metrics``: accuracy, F1, Matthews
correlation; Pearson / Spearman for STS-B, by scikit-learn and scipy) as one JSON line; an unlabelled one
(GLUE's test sets) is predicted into ``OUT/{CoLA,SST-2,MRPC,STS-B,QQP,MNLI-m,MNLI-mm,QNLI,RTE,WNLI}.tsv``
(``index<TAB>prediction``), the files the GLUE server takes.
"""

import argparse
import json
import logging
import os
import sys
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from fairseq_xlm.cli import setup_logging


def predict(checkpoint: str, data: str, split: str, batch_size: int = 64):
    """(task, predictions in example order: class ids or STS-B scores, gold labels or None when unlabelled)."""
    from fairseq import utils

    from fairseq_xlm.cli.evaluate_xnli import load_fine_tuned
    from fairseq_xlm.tasks.glue import XlmGlueTask
    from fairseq_xlm.tasks.xnli import classification_logits

    model, _, task = load_fine_tuned(checkpoint, {"data": data}, XlmGlueTask, "xlm_glue")
    use_cuda = next(model.parameters()).is_cuda
    task.load_dataset(split)
    dataset = task.dataset(split)
    out = np.zeros(len(dataset), dtype=np.float64 if task.regression else np.int64)
    batches = task.get_batch_iterator(dataset, max_sentences=batch_size, num_workers=0, seed=1)
    with torch.no_grad():
        for sample in batches.next_epoch_itr(shuffle=False):
            if use_cuda:
                sample = utils.move_to_cuda(sample)
            logits = classification_logits(model, sample["net_input"]).float()
            pred = logits.squeeze(-1) if task.regression else logits.argmax(-1)
            out[sample["id"].cpu().numpy()] = pred.cpu().numpy()
    labelled = os.path.exists(os.path.join(task.cls_dir, f"{split}.en.label"))
    gold = np.asarray(dataset.labels) if labelled else None
    return task, out, gold


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, float]]:
    """CLI entry point; returns {split: scores} of the labelled splits."""
    from fairseq_xlm.data.glue import glue_metrics, submission_name, write_submission

    parser = argparse.ArgumentParser(prog="python -m fairseq_xlm.cli.evaluate_glue", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a fine-tuned checkpoint (fairseq-train --task xlm_glue)")
    parser.add_argument("data", help="the data-bin it was fine-tuned on (with its --cls-subdir)")
    parser.add_argument("--splits", default="valid,test", help="comma-separated splits (MNLI: valid_mm, test_mm too)")
    parser.add_argument("--submission-dir", default=None, help="where to write the unlabelled splits' predictions")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per batch")
    args = parser.parse_args(argv)
    scores = {}
    try:
        for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
            task, pred, gold = predict(args.checkpoint, args.data, split, args.batch_size)
            name = task.cfg.glue_task
            if gold is not None:
                scores[split] = glue_metrics(name, pred, gold)
                print(json.dumps({"task": name, "split": split, **{k: round(v, 2) for k, v in scores[split].items()}}))
                continue
            if not args.submission_dir:
                raise ValueError(f"{split}: unlabelled; give --submission-dir to write its predictions")
            index_file = os.path.join(task.cls_dir, f"{split}.en.index")
            with open(index_file, encoding="utf-8") as f:
                index = [line.rstrip("\n") for line in f]
            os.makedirs(args.submission_dir, exist_ok=True)
            path = os.path.join(args.submission_dir, submission_name(name, split))
            write_submission(path, name, index, pred)
            print(f"wrote {len(pred)} {split} predictions to {path}")
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}")
    return scores


if __name__ == "__main__":
    setup_logging(logging.WARNING, sys.stderr)
    main(sys.argv[1:])
