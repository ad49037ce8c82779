"""The PKM paper's memory diagnostics as fairseq metrics: share of slots used and KL from uniform.

Each memory adds, on the device, how often every slot was read and its summed weights (``usage``). After
each step the task moves those (2, slots) tensors into the logging output (``collect``); ``reduce_metrics``
sums them into fairseq ``SumMeter``s under hidden keys (``_mem_usage_*``: summed over the log interval, the
epoch and each validation by fairseq's aggregators) and derives, per memory:

    mem_used_<name>  percentage of slots read at least once
    mem_kl_<name>    KL(z' || uniform) in nats, z' = the summed weights normalised to 1 (the paper's Table 2)

Names: ``enc1in`` is encoder layer 1's memory in place of its FFN, ``dec0after`` decoder layer 0's after it.
The host reads the tensors only when fairseq prints a log line, never in the forward.
"""

import math
import re
from functools import partial

import torch
from fairseq.logging import metrics

from .memory import ProductKeyMemory

PREFIX = "_mem_usage_"


def short_name(module_name: str) -> str:
    """'decoder.stack.layers.0.memory_after' -> 'dec0after'; 'encoder.layers.1.memory_in' -> 'enc1in'."""
    m = re.search(r"layers\.(\d+)\.memory_(in|after)$", module_name)
    stack = "dec" if module_name.startswith("decoder") else "enc"
    return f"{stack}{m.group(1)}{m.group(2)}" if m else re.sub(r"\W", "_", module_name)


def collect(model, log: dict) -> dict:
    """Move every memory's usage since the last call into ``log`` (hidden keys); returns ``log``."""
    for name, module in model.named_modules():
        if isinstance(module, ProductKeyMemory):
            usage = module.take_usage()
            if usage is not None:
                log[PREFIX + short_name(name)] = usage
    return log


def used_percent(usage: torch.Tensor) -> float:
    """Percentage of slots read at least once."""
    return 100.0 * float((usage[0] > 0).float().mean())


def kl_from_uniform(usage: torch.Tensor) -> float:
    """KL(p || uniform) of p = summed slot weights / their total (0 for an unread memory)."""
    weights = usage[1].double().clamp(min=0)
    total = weights.sum()
    if total <= 0:
        return 0.0
    p = weights / total
    return float(torch.xlogy(p, p).sum()) + math.log(p.numel())


def _derived(fn, key, meters):
    return round(fn(meters[key].sum), 3) if key in meters and torch.is_tensor(meters[key].sum) else 0.0


def reduce_metrics(logging_outputs) -> None:
    """Sum the usage of every memory and log ``mem_used_*`` / ``mem_kl_*`` (see the module doc)."""
    keys = sorted({k for log in logging_outputs for k in log if k.startswith(PREFIX)})
    for key in keys:
        total = sum(log[key] for log in logging_outputs if key in log)
        metrics.log_scalar_sum(key, total.detach().float())
        name = key[len(PREFIX):]
        metrics.log_derived(f"mem_used_{name}", partial(_derived, used_percent, key))
        metrics.log_derived(f"mem_kl_{name}", partial(_derived, kl_from_uniform, key))
