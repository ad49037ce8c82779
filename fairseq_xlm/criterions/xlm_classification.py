"""Criterion ``xlm_classification``: cross-entropy of the first-token classifier, accuracy per language.

Logs ``accuracy_{lang}`` for every language in the batch(es) and ``accuracy``, the mean of those per-language
accuracies (the "avg" column of the XNLI table; use ``--best-checkpoint-metric accuracy
--maximize-best-checkpoint-metric``). ``loss`` is the mean cross-entropy per example in base 2.
"""

import math

import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion

from ..tasks.xnli import classification_logits


@register_criterion("xlm_classification")
class XlmClassificationCriterion(FairseqCriterion):
    """Sum of example cross-entropies; sample size = number of examples."""

    def __init__(self, task):
        super().__init__(task)
        self.langs = list(task.langs)

    def forward(self, model, sample, reduce=True):
        logits = classification_logits(model, sample["net_input"]).float()
        target = sample["target"]
        loss = F.cross_entropy(logits, target, reduction="sum" if reduce else "none")
        correct = logits.argmax(dim=-1).eq(target)
        n = int(target.numel())
        log = {"loss": loss.detach().sum(), "ntokens": sample["ntokens"], "nsentences": n, "sample_size": n}
        # Every language gets its keys, even at zero: all ranks must log the same keys (fast stat sync).
        for lang_id, lang in enumerate(self.langs):
            mine = sample["lang"].eq(lang_id)
            log[f"n:{lang}"] = int(mine.sum())
            log[f"correct:{lang}"] = int((correct & mine).sum())
        return loss, n, log

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return sum(float(log.get(key, 0)) for log in logging_outputs)

        sample_size = total("sample_size")
        if sample_size > 0:
            metrics.log_scalar("loss", total("loss") / sample_size / math.log(2), sample_size, round=3)
        langs = sorted({key.split(":", 1)[1] for log in logging_outputs for key in log if key.startswith("n:")})
        for lang in langs:
            n = total(f"n:{lang}")
            if n > 0:
                metrics.log_scalar(f"accuracy_{lang}", 100.0 * total(f"correct:{lang}") / n, n, round=2)
        # Derived (computed when logged) so that it averages the languages seen over the whole
        # validation set, not just those of the first batch.
        metrics.log_derived("accuracy", mean_language_accuracy)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


def mean_language_accuracy(meters) -> float:
    """Mean of the ``accuracy_{lang}`` meters that have seen examples (0 when none has)."""
    values = [
        meters[key].avg for key in meters.keys()
        if key.startswith("accuracy_") and getattr(meters[key], "count", 0) > 0
    ]
    return round(sum(values) / len(values), 2) if values else 0.0
