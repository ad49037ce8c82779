"""All steps of a run (``clm_en``, ``tlm_en-es``, ``ae:en``, ``bt:en-es-en``, ...) behind one dataset.

It is fetched with ``schedule.Draw`` tuples; a batch never mixes steps, and its collated sample carries
``sample["step"]`` (the step's name) and ``sample["iteration"]`` (the authors' ``n_total_iter``, which
the task's lambda schedules read). A step dataset that draws randomness per sample (masks, noise) has
``draw(index, key)``; the others are simply indexed.
"""

from collections import OrderedDict
from typing import Callable, Dict, List, Optional

import numpy as np
from fairseq.data import FairseqDataset

from .schedule import Draw, cut_batches


def fetch(dataset, index: int, key) -> dict:
    """``dataset.draw(index, key)`` for datasets that draw randomness per use, else ``dataset[index]``."""
    draw = getattr(dataset, "draw", None)
    return draw(index, key) if draw is not None else dataset[index]


class StepDataset(FairseqDataset):
    """Named step datasets with a collater each; per step ``costs`` (tokens per sample, the authors'
    batching lengths: an array, or ``token_stream.BlockCosts`` for a stream), ``keep`` (the samples allowed in
    training batches; a step left out or None keeps all, without an index array) and ``sentences`` (the size
    that weighs the step in language sampling: sentences or pairs, as the authors' ``set_sampling_probs``)."""

    def __init__(self, steps: "OrderedDict[str, FairseqDataset]", collaters: Dict[str, Callable],
                 costs: Dict[str, np.ndarray], keep: Optional[Dict[str, np.ndarray]] = None,
                 sentences: Optional[Dict[str, int]] = None):
        self.steps = steps
        self.names = list(steps)
        self.collaters = collaters
        self.costs = {name: costs[name] if hasattr(costs[name], "sorted_values") else
                      np.asarray(costs[name], dtype=np.int64) for name in self.names}
        self.keep = {name: (keep or {}).get(name) for name in self.names}
        self.sentences = sentences or {name: len(ds) for name, ds in steps.items()}

    def kept(self, name: str) -> int:
        """How many samples of step ``name`` training batches may hold."""
        keep = self.keep[name]
        return len(self.steps[name]) if keep is None else len(keep)

    def __getitem__(self, draw: Draw):
        return draw, fetch(self.steps[self.names[draw.step]], draw.index, draw.key)

    def __len__(self):
        return sum(len(ds) for ds in self.steps.values())

    def collater(self, samples):
        if not samples:
            return {}
        first = samples[0][0]
        if any(d.step != first.step for d, _ in samples):
            raise RuntimeError("StepDataset: a batch mixes steps; batch with the task's schedule")
        name = self.names[first.step]
        batch = self.collaters[name]([item for _, item in samples])
        if batch:
            batch["step"] = name
            batch["iteration"] = first.iteration
        return batch

    @property
    def supports_prefetch(self):
        return False

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        return False

    def set_epoch(self, epoch):
        pass  # randomness comes with each Draw, not from dataset state (data-loader workers never see this)

    def validation_batches(self, max_tokens, max_sentences) -> List[List[Draw]]:
        """Every kept sample of every step exactly once, in size order, with fixed draws (the same masks and
        noise at every validation, so that checkpoints compare)."""
        out = []
        for k, name in enumerate(self.names):
            costs, keep = self.costs[name], self.keep[name]
            keep = np.arange(len(self.steps[name])) if keep is None else keep
            order = keep[np.argsort(costs[keep], kind="mergesort")]
            for batch in cut_batches(order, costs, max_tokens, max_sentences):
                out.append([Draw(k, int(i), 0, 0, -1) for i in batch])
        return out
