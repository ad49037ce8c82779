"""The GLUE tasks as the authors fine-tune and score them (``xlm/evaluation/glue.py``): their files, classes,
metrics and the GLUE submission format.

Files are the GLUE distribution's tab-separated ``train.tsv`` / ``dev*.tsv`` / ``test*.tsv`` (CoLA's train and
dev have no header); columns are found by their header names, so the readers do not depend on column
positions. Classes are the authors' ids (the sorted label strings of their ``load_data``); STS-B is a
regression of its 0-5 score. Metrics are the authors' (accuracy, F1 -- binary for two classes, micro
otherwise --, Matthews correlation; Pearson / Spearman for STS-B), all x 100, computed by scikit-learn and
scipy; ``OFFICIAL`` names the one the GLUE leaderboard ranks by.
"""

import csv
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class GlueSpec:
    """One GLUE task: the columns of its texts and label, its classes (None: regression), its splits
    (our split name -> GLUE file stem) and its submission file name."""

    first: str
    second: Optional[str]
    label: str
    classes: Optional[Tuple[str, ...]]
    splits: Tuple[Tuple[str, str], ...]
    submission: str
    official: Tuple[str, ...]
    no_header: Tuple[str, ...] = ()  # (first, label) column positions of header-less train/dev files


_BINARY = ("0", "1")
_SPLITS = (("train", "train"), ("valid", "dev"), ("test", "test"))
_NLI2 = ("entailment", "not_entailment")
GLUE_TASKS: Dict[str, GlueSpec] = {
    "CoLA": GlueSpec("sentence", None, "label", _BINARY, _SPLITS, "CoLA", ("mcc",), no_header=(3, 1)),
    "SST-2": GlueSpec("sentence", None, "label", _BINARY, _SPLITS, "SST-2", ("acc",)),
    "MRPC": GlueSpec("#1 String", "#2 String", "Quality", _BINARY, _SPLITS, "MRPC", ("f1", "acc")),
    "STS-B": GlueSpec("sentence1", "sentence2", "score", None, _SPLITS, "STS-B", ("prs", "spr")),
    "QQP": GlueSpec("question1", "question2", "is_duplicate", _BINARY, _SPLITS, "QQP", ("f1", "acc")),
    "MNLI": GlueSpec("sentence1", "sentence2", "gold_label", ("contradiction", "entailment", "neutral"),
                     (("train", "train"), ("valid", "dev_matched"), ("test", "test_matched"),
                      ("valid_mm", "dev_mismatched"), ("test_mm", "test_mismatched")), "MNLI-m", ("acc",)),
    "QNLI": GlueSpec("question", "sentence", "label", _NLI2, _SPLITS, "QNLI", ("acc",)),
    "RTE": GlueSpec("sentence1", "sentence2", "label", _NLI2, _SPLITS, "RTE", ("acc",)),
    "WNLI": GlueSpec("sentence1", "sentence2", "label", _BINARY, _SPLITS, "WNLI", ("acc",)),
}


def glue_spec(task: str) -> GlueSpec:
    """The spec of ``task``; one clear error naming the known tasks."""
    if task not in GLUE_TASKS:
        raise ValueError(f"--glue-task {task!r}: not a GLUE task (known: {', '.join(GLUE_TASKS)})")
    return GLUE_TASKS[task]


def submission_name(task: str, split: str) -> str:
    """The file the GLUE server expects for ``split``'s predictions (MNLI mismatched: MNLI-mm.tsv)."""
    spec = glue_spec(task)
    return ("MNLI-mm" if split.endswith("_mm") else spec.submission) + ".tsv"


@dataclass
class GlueSplit:
    """One split's texts, gold labels (None: unlabelled test set) and the rows' GLUE ``index`` values."""

    first: List[str]
    second: Optional[List[str]]
    labels: Optional[List[str]]
    index: List[str]


def read_glue_tsv(path: str, task: str) -> GlueSplit:
    """A GLUE tsv file (quotes are text, as GLUE's own loaders read it); a missing column or a bad label is
    one error naming the file and line."""
    spec = glue_spec(task)
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = rows[0] if rows else []
    if spec.no_header and spec.first not in header:  # CoLA's train/dev: source, label, original label, sentence
        first, label = spec.no_header
        columns, body, start = {spec.first: first, spec.label: label}, rows, 1
    else:
        columns, body, start = {name: i for i, name in enumerate(header)}, rows[1:], 2
    wanted = [spec.first] + ([spec.second] if spec.second else [])
    missing = [name for name in wanted if name not in columns]
    if missing:
        raise ValueError(f"{path}: no column {missing} in its header {header} (is it {task}'s file?)")
    labelled = spec.label in columns
    out = GlueSplit([], [] if spec.second else None, [] if labelled else None, [])
    for number, row in enumerate(body, start=start):
        need = max(columns[name] for name in wanted + ([spec.label] if labelled else []))
        if len(row) <= need:
            raise ValueError(f"{path}:{number}: {len(row)} fields, expected at least {need + 1}")
        out.first.append(row[columns[spec.first]])
        if spec.second:
            out.second.append(row[columns[spec.second]])
        out.index.append(row[columns["index"]] if "index" in columns else str(len(out.index)))
        if labelled:
            label = row[columns[spec.label]].strip()
            if spec.classes is None:
                try:
                    ok = 0.0 <= float(label) <= 5.0
                except ValueError:
                    ok = False
            else:
                ok = label in spec.classes
            if not ok:
                raise ValueError(f"{path}:{number}: label {label!r} is not one of {task}'s "
                                 f"{spec.classes or 'scores in [0, 5]'}")
            out.labels.append(label)
    return out


def glue_files(glue_dir: str, task: str) -> Dict[str, str]:
    """{our split: path} of the task's files present in ``glue_dir`` (its GLUE folder, e.g. glue_data/MRPC)."""
    spec = glue_spec(task)
    found = {split: os.path.join(glue_dir, stem + ".tsv") for split, stem in spec.splits
             if os.path.isfile(os.path.join(glue_dir, stem + ".tsv"))}
    if "train" not in found:
        raise FileNotFoundError(f"{glue_dir}: no train.tsv (--glue-dir should be GLUE's {task} folder)")
    return found


def glue_metrics(task: str, pred: Sequence, gold: Sequence) -> Dict[str, float]:
    """The authors' scores (x 100): acc, f1, mcc for classification (class ids), prs, spr for STS-B."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import f1_score, matthews_corrcoef

    pred, gold = np.asarray(pred), np.asarray(gold)
    if glue_spec(task).classes is None:
        return {"prs": 100.0 * float(pearsonr(pred, gold)[0]), "spr": 100.0 * float(spearmanr(pred, gold)[0])}
    binary = len(glue_spec(task).classes) == 2
    return {"acc": 100.0 * float((pred == gold).mean()),
            "f1": 100.0 * float(f1_score(gold, pred, average="binary" if binary else "micro")),
            "mcc": 100.0 * float(matthews_corrcoef(gold, pred))}


def write_submission(path: str, task: str, index: Sequence[str], predictions: Sequence) -> None:
    """GLUE's submission file: ``index<TAB>prediction`` with a header; class names (MNLI, QNLI, RTE: their
    words; the others 0/1) or STS-B scores clipped to [0, 5]."""
    spec = glue_spec(task)
    if len(index) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(index)} test rows")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("index\tprediction\n")
        for i, p in zip(index, predictions):
            value = f"{min(max(float(p), 0.0), 5.0):.3f}" if spec.classes is None else spec.classes[int(p)]
            f.write(f"{i}\t{value}\n")
    os.replace(tmp, path)
