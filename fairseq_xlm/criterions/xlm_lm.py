"""Criterion ``xlm_lm``: cross-entropy at predicted positions only, logged per objective and language.

Validation then reports ``mlm_ppl_en``, ``tlm_acc_en-es``, ``clm_ppl_es`` ... and the averages ``avg_ppl``
and ``avg_acc`` over all steps (use ``--best-checkpoint-metric avg_ppl``, or ``avg_acc`` with
``--maximize-best-checkpoint-metric``).
"""

import math
import re
from typing import Iterable, List

import torch.nn.functional as F
from fairseq import metrics, utils
from fairseq.criterions import FairseqCriterion, register_criterion

FIELDS = ("loss", "n", "correct")
STEP_METER = re.compile(r"^(clm|mlm|tlm)_(loss|acc)_")


def _average(meters, what: str, fn) -> float:
    """Mean over steps of fn(meter average) for the per-step meters ``{kind}_{what}_{lang}``."""
    vals = [fn(meter.avg) for key, meter in meters.items()
            if STEP_METER.match(key) and key.split("_")[1] == what and meter.count > 0]
    return round(sum(vals) / len(vals), 3) if vals else 0.0


@register_criterion("xlm_lm")
class XlmLmCriterion(FairseqCriterion):
    """Sum of token cross-entropies over the targets of one step batch (pad = not predicted)."""

    def __init__(self, task):
        super().__init__(task)

    def forward(self, model, sample, reduce=True):
        target = sample["target"]
        predicted = target.ne(self.padding_idx)
        logits, _ = model(**sample["net_input"], masked_tokens=predicted)
        gold = target[predicted]
        loss = F.cross_entropy(logits.float(), gold, reduction="sum")
        n = int(gold.numel())
        step = sample["step"]
        log = {
            "loss": loss.detach(),
            "ntokens": sample["ntokens"],
            "nsentences": sample["nsentences"],
            "sample_size": n,
            f"{step}:loss": loss.detach(),
            f"{step}:n": n,
            f"{step}:correct": int((logits.argmax(-1) == gold).sum()),
        }
        return loss, n, log

    @staticmethod
    def zero_log(step_names: Iterable[str]) -> List[str]:
        """Every key a step can log: all ranks must send the same keys to fairseq's fast stat sync."""
        return [f"{name}:{f}" for name in step_names for f in FIELDS]

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return sum(float(log.get(key, 0)) for log in logging_outputs)

        sample_size = total("sample_size")
        if sample_size > 0:
            metrics.log_scalar("loss", total("loss") / sample_size / math.log(2), sample_size, round=3)
            metrics.log_derived("ppl", lambda m: utils.get_perplexity(m["loss"].avg))
        names = sorted({key.rsplit(":", 1)[0] for log in logging_outputs for key in log if ":" in key})
        for name in names:
            n = total(f"{name}:n")
            if n == 0:
                continue
            kind, lang = name.split("_", 1)
            metrics.log_scalar(f"{kind}_loss_{lang}", total(f"{name}:loss") / n / math.log(2), n, round=3)
            metrics.log_scalar(f"{kind}_acc_{lang}", 100.0 * total(f"{name}:correct") / n, n, round=2)
            metrics.log_derived(
                f"{kind}_ppl_{lang}", lambda m, k=f"{kind}_loss_{lang}": utils.get_perplexity(m[k].avg)
            )
        # Derived meters are registered once per aggregation, so they read the step list from the meters.
        metrics.log_derived("avg_ppl", lambda m: _average(m, "loss", lambda v: 2**v))
        metrics.log_derived("avg_acc", lambda m: _average(m, "acc", lambda v: v))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
