"""Task ``xlm_glue``: the GLUE tasks as the authors fine-tune them (``xlm/evaluation/glue.py``), on the ``xnli``
task's machinery (data layout, first-token classifier, the authors' random batches and epochs, two learning
rates).

    python -m fairseq_xlm.cli.prepare_xnli extract-glue --glue-dir glue_data/MRPC --task MRPC --out raw/MRPC
    python -m fairseq_xlm.cli.prepare_xnli binarize --raw raw/MRPC --data DATA --subdir glue/MRPC
    fairseq-train DATA --task xlm_glue --glue-task MRPC --cls-subdir glue/MRPC --langs en,fr --criterion xlm_glue ...

GLUE is English: every split is ``{split}.en`` (``--train-langs en``, the default), fed with the language id of
``en`` in ``--langs`` (the authors' ``lang2id['en']``). STS-B is a regression: one output, trained with the mean
squared error of the authors, and its ``.label`` files hold scores (no labels.txt). Test sets are unlabelled
(no ``.label``): ``python -m fairseq_xlm.cli.evaluate_glue`` predicts them into GLUE's submission files.
MNLI validates on ``valid`` (matched) and ``valid_mm`` (mismatched): ``--valid-subset valid,valid_mm``.
"""

from dataclasses import dataclass, field

import numpy as np
from fairseq.tasks import register_task

from ..data.classification_dataset import read_scores
from ..data.glue import glue_spec
from .xnli import XlmXnliConfig, XlmXnliTask


@dataclass
class XlmGlueConfig(XlmXnliConfig):
    """``xnli``'s configuration plus the GLUE task, which fixes the classes (or the regression)."""

    glue_task: str = field(default="", metadata={
        "help": "CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE or WNLI (STS-B: regression)"})
    cls_subdir: str = field(default="", metadata={
        "help": "folder under DATA with the task's data (prepare_xnli extract-glue + binarize); default: glue/TASK"})


@register_task("xlm_glue", dataclass=XlmGlueConfig)
class XlmGlueTask(XlmXnliTask):
    """GLUE fine-tuning: classes from --glue-task (labels.txt is checked against them), STS-B a regression."""

    @classmethod
    def setup_task(cls, cfg: XlmGlueConfig, **kwargs):
        spec = glue_spec(cfg.glue_task)
        cfg.cls_subdir = cfg.cls_subdir or f"glue/{cfg.glue_task}"
        if spec.classes is not None:
            task = super().setup_task(cfg, **kwargs)
            if tuple(task.label_names) != spec.classes:
                raise ValueError(f"{task.cls_dir}/labels.txt names {task.label_names}, not {cfg.glue_task}'s classes "
                                 f"{list(spec.classes)} (make it with prepare_xnli extract-glue)")
            return task
        from ..data import layout

        task = cls(cfg, layout.load_dictionary(cfg.data), ["score"])  # one output: the regression
        if not task.data_langs("train") and not task.data_langs("valid"):
            raise FileNotFoundError(f"{task.cls_dir}: no train.en / valid.en data for {cfg.glue_task}")
        return task

    @property
    def regression(self) -> bool:
        return glue_spec(self.cfg.glue_task).classes is None

    def read_labels(self, path: str, expected: int) -> np.ndarray:
        """Scores for STS-B, class ids otherwise; an unlabelled test set gets placeholders (never scored)."""
        import os

        if not os.path.exists(path):
            if not os.path.basename(path).startswith("test"):
                raise FileNotFoundError(f"{path}: missing (only test sets may be unlabelled)")
            return np.zeros(expected, dtype=np.float32 if self.regression else np.int64)
        return read_scores(path, expected) if self.regression else super().read_labels(path, expected)
