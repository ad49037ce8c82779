"""Criterion ``xlm_glue``: the authors' GLUE losses (cross-entropy; mean squared error for STS-B) and their
metrics in fairseq's validation log.

Classification logs ``accuracy`` and, for two classes, ``f1`` and ``mcc`` from summed confusion counts;
STS-B logs ``pearson`` from summed moments. Those are the very formulas of scikit-learn's ``f1_score`` /
``matthews_corrcoef`` and scipy's ``pearsonr`` (tested equal), summable across batches and workers; Spearman
needs every prediction at once and is reported by ``python -m fairseq_xlm.cli.evaluate_glue``. Use e.g.
``--best-checkpoint-metric mcc --maximize-best-checkpoint-metric`` for CoLA.
"""

import math

import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion

from ..tasks.xnli import classification_logits

CONFUSION = ("tp", "fp", "fn", "tn")
MOMENTS = ("sx", "sy", "sxx", "syy", "sxy")


@register_criterion("xlm_glue")
class XlmGlueCriterion(FairseqCriterion):
    """Sum of example losses; sample size = number of examples."""

    def __init__(self, task):
        super().__init__(task)
        self.regression = bool(getattr(task, "regression", False))
        self.binary = not self.regression and len(task.label_names) == 2

    def forward(self, model, sample, reduce=True):
        logits = classification_logits(model, sample["net_input"]).float()
        target = sample["target"]
        n = int(target.numel())
        log = {"ntokens": sample["ntokens"], "nsentences": n, "sample_size": n, "n": n}
        if self.regression:
            pred, gold = logits.squeeze(-1), target.float()
            loss = F.mse_loss(pred, gold, reduction="sum")
            p, g = pred.detach().double(), gold.double()
            log.update(sx=float(p.sum()), sy=float(g.sum()), sxx=float((p * p).sum()), syy=float((g * g).sum()),
                       sxy=float((p * g).sum()))
        else:
            loss = F.cross_entropy(logits, target, reduction="sum")
            pred = logits.argmax(-1)
            log["correct"] = int(pred.eq(target).sum())
            if self.binary:
                for name, (p, g) in zip(CONFUSION, ((1, 1), (1, 0), (0, 1), (0, 0))):
                    log[name] = int((pred.eq(p) & target.eq(g)).sum())
        log["loss"] = loss.detach()
        return loss, n, log

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return sum(float(log.get(key, 0)) for log in logging_outputs)

        n = total("n")
        if n == 0:
            return
        metrics.log_scalar("loss", total("loss") / n / math.log(2), n, round=3)
        if any("correct" in log for log in logging_outputs):
            metrics.log_scalar("accuracy", 100.0 * total("correct") / n, n, round=2)
        # fairseq reduces every validation batch on its own: F1, MCC and Pearson are not means of per-batch
        # values, so their counts are summed over batches (hidden "_" meters) and the scores derived from them
        for key in ("n",) + CONFUSION + MOMENTS:
            if any(key in log for log in logging_outputs):
                metrics.log_scalar_sum(f"_glue_{key}", total(key))
        if any("tp" in log for log in logging_outputs):
            for name in ("f1", "mcc"):
                metrics.log_derived(name, lambda m, name=name: round(
                    binary_scores(*(m[f"_glue_{k}"].sum for k in CONFUSION))[name], 2))
        if any("sxy" in log for log in logging_outputs):
            metrics.log_derived("pearson", lambda m: round(pearson_from_moments(
                *(m[f"_glue_{k}"].sum for k in ("n",) + MOMENTS)), 2))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


def binary_scores(tp: float, fp: float, fn: float, tn: float) -> dict:
    """F1 and Matthews correlation (x 100) of a binary confusion matrix, 0 where undefined (as scikit-learn)."""
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = (tp * tn - fp * fn) / denominator if denominator else 0.0
    return {"f1": 100.0 * f1, "mcc": 100.0 * mcc}


def pearson_from_moments(n, sx, sy, sxx, syy, sxy) -> float:
    """Pearson's r (x 100) from sums of x, y, x², y², xy; 0 for a constant side."""
    cov = sxy - sx * sy / n
    var = (sxx - sx * sx / n) * (syy - sy * sy / n)
    return 100.0 * cov / math.sqrt(var) if var > 0 else 0.0
