"""One dataset over all step kinds of a run (``clm_en``, ``mlm_es``, ``tlm_en-es``, ...), batched per update.

A *super-batch* holds one ordinary batch for each step of an update; its collater returns
``{step_name: batch}`` and the task runs every step of it in one fairseq update (see XlmPretrainTask).
Which steps an update contains follows the authors' ``shuf_order``: either every step (alpha < 0), or,
separately for monolingual steps and for pairs of each objective, ``min(5, n)`` draws with replacement
from the alpha-smoothed distribution ``q_i ∝ p_i ** alpha`` over the steps' token counts ``p_i``.
"""

from collections import OrderedDict
from typing import Dict, List, Sequence

import numpy as np
from fairseq.data import FairseqDataset, data_utils

from .lm_datasets import collate_lm


def smoothed_probs(sizes: Sequence[float], alpha: float) -> np.ndarray:
    """q_i = p_i ** alpha / sum_j p_j ** alpha with p_i = sizes_i / sum(sizes) (XLM's language sampling)."""
    p = np.asarray(sizes, dtype=np.float64)
    if (p <= 0).any():
        raise ValueError(f"sampling sizes must be positive, got {list(sizes)}")
    q = (p / p.sum()) ** alpha
    return q / q.sum()


class XlmStepDataset(FairseqDataset):
    """Concatenation of per-step datasets with global indices; batches are built per step."""

    def __init__(self, steps: "OrderedDict[str, FairseqDataset]", pad: int, causal: Dict[str, bool],
                 groups: Dict[str, str]):
        self.steps = steps
        self.names = list(steps)
        self.pad = pad
        self.causal = causal
        self.groups = groups  # step name -> sampling group (objective + mono/pair)
        lengths = [len(ds) for ds in steps.values()]
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.sizes = np.concatenate([np.asarray(ds.sizes) for ds in steps.values()])

    def _locate(self, index: int):
        k = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.names[k], int(index - self.offsets[k])

    def __getitem__(self, index):
        name, local = self._locate(index)
        return name, self.steps[name][local]

    def __len__(self):
        return int(self.offsets[-1])

    def num_tokens(self, index):
        return int(self.sizes[index])

    def size(self, index):
        return int(self.sizes[index])

    def collater(self, samples):
        by_step: Dict[str, List] = OrderedDict()
        for name, item in samples:
            by_step.setdefault(name, []).append(item)
        return {name: collate_lm(items, self.pad, self.causal[name], name) for name, items in by_step.items()}

    def set_epoch(self, epoch):
        for ds in self.steps.values():
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(epoch)

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        return False

    def step_batches(self, name: str, epoch: int, seed: int, max_tokens, max_sentences, multiple: int,
                     max_len: int) -> List[np.ndarray]:
        """Shuffled batches of one step, as global indices; samples longer than ``max_len`` are dropped."""
        k = self.names.index(name)
        ds = self.steps[name]
        with data_utils.numpy_seed(seed, epoch, k):
            local = np.random.permutation(len(ds))
        sizes = np.asarray(ds.sizes)
        local = local[sizes[local] <= max_len]
        batches = data_utils.batch_by_size(
            local, None, max_tokens=max_tokens, max_sentences=max_sentences,
            required_batch_size_multiple=multiple, num_tokens_vec=sizes[local].astype(np.int64),
        )
        return [np.asarray(b, dtype=np.int64) + self.offsets[k] for b in batches]

    def make_batches(self, epoch: int, seed: int, alpha: float, max_tokens, max_sentences, multiple: int,
                     max_len: int, validation: bool = False) -> List[np.ndarray]:
        """Super-batches for one epoch (see module doc); validation visits every sample of every step once."""
        if validation:
            multiple = 1  # fairseq's batch_by_size drops the samples left over by a batch-size multiple
        per_step = {
            name: self.step_batches(name, epoch, seed, max_tokens, max_sentences, multiple, max_len)
            for name in self.names
        }
        if validation:
            return [b for name in self.names for b in per_step[name]]
        n_updates = max(len(b) for b in per_step.values())
        rng = np.random.default_rng((seed, epoch, 7919))
        cursor = {name: 0 for name in self.names}
        groups: Dict[str, List[str]] = OrderedDict()
        for name in self.names:
            if per_step[name]:
                groups.setdefault(self.groups[name], []).append(name)
        # languages are weighted by their tokens
        probs = {g: smoothed_probs([np.asarray(self.steps[n].sizes).sum() for n in names], alpha)
                 for g, names in groups.items()} if alpha >= 0 else {}
        out = []
        for _ in range(n_updates):
            chosen = []
            for g, names in groups.items():
                if alpha < 0:
                    chosen.extend(names)
                else:
                    draws = rng.choice(len(names), size=min(5, len(names)), replace=True, p=probs[g])
                    chosen.extend(names[i] for i in draws)
            parts = []
            for name in chosen:
                batches = per_step[name]
                parts.append(batches[cursor[name] % len(batches)])
                cursor[name] += 1
            out.append(np.concatenate(parts))
        return out
