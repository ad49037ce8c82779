"""The authors' training schedule as a fairseq batch list: one fairseq update is one step of one kind.

The authors' loop (``train.py`` + ``xlm/trainer.py``) is, per *iteration*::

    for objective in (clm, mlm) or (ae, mt, bt):
        for step in shuf_order(steps of that objective):   # sampled or permuted, see ``StepGroup``
            step(lambda_objective)   # next batch of the step's own iterator; one optimiser step on lambda * mean loss
    n_total_iter += 1; update lambdas

``EpochSchedule`` writes that loop out as a list of fairseq batches. Each drawn step becomes ``W x U``
consecutive batches of that step (``W`` data-parallel workers, ``U`` = ``--update-freq``): fairseq's
``ShardedIterator`` hands worker ``w`` the batches ``w, w + W, ...`` and ``GroupedIterator`` joins ``U`` of
them into one update, so every worker runs the same step kind in the same update on different data, and
one update is one optimiser step of one step kind, as the authors'. A step whose lambda is 0 at that
iteration is skipped (the authors return before ``optimize``).

Every step has its own stream of batches: a pass is a fresh permutation of the step's samples, cut into
batches by summed length (the authors' ``get_iterator``: ``cumsum(cost) // tokens_per_batch``, optionally
grouped by size, batches in random order); a new pass starts when one is used up. Batch elements are
``Draw`` tuples ``(step, index, epoch, pass, iteration)``: datasets seed every random choice of a sample
(masks, noise) from the tuple it is fetched with, so a sample gets new masks each time it is used,
reproducibly from (seed, epoch), and data-loader workers (which never see ``set_epoch``) draw the same.
"""

import math
from dataclasses import dataclass
from typing import Callable, List, NamedTuple, Optional, Sequence

import numpy as np


class Draw(NamedTuple):
    """One sample of one batch: which step and sample, and the key of its random draws."""

    step: int
    index: int
    epoch: int
    pass_: int
    iteration: int

    @property
    def key(self):
        """The part of the seed that makes each use of a sample draw anew: (epoch, pass)."""
        return (self.epoch, self.pass_)


@dataclass
class StepGroup:
    """Steps chosen together at each iteration: ``sample`` draws ``min(5, n)`` with replacement (weights
    ``probs``, None = uniform), otherwise every step once in a random order (the authors' ``shuf_order``)."""

    steps: List[int]
    sample: bool
    probs: Optional[np.ndarray] = None

    def order(self, rng: np.random.Generator, n: int = 5) -> List[int]:
        if not self.steps:
            return []
        if not self.sample:
            return [self.steps[i] for i in rng.permutation(len(self.steps))]
        draws = rng.choice(len(self.steps), size=min(n, len(self.steps)), replace=True, p=self.probs)
        return [self.steps[i] for i in draws]


def smoothed_probs(sizes: Sequence[float], alpha: float) -> Optional[np.ndarray]:
    """The authors' ``set_sampling_probs``: ``q_i ∝ (n_i / sum n) ** alpha``; alpha < 0 (their -1) is
    uniform (None)."""
    if alpha < 0:
        return None
    p = np.asarray(sizes, dtype=np.float64)
    if (p <= 0).any():
        raise ValueError(f"sampling sizes must be positive, got {list(sizes)}")
    q = (p / p.sum()) ** alpha
    return q / q.sum()


def cut_batches(order: np.ndarray, costs: np.ndarray, max_tokens: Optional[int],
                max_sentences: Optional[int]) -> List[np.ndarray]:
    """The authors' cut of ``order`` (``Dataset.get_iterator``): a new batch where the running sum of
    ``costs`` passes a multiple of ``max_tokens`` (``cumsum // tokens_per_batch``), and/or
    ``ceil(n / max_sentences)`` batches whose sizes differ by at most one (their ``np.array_split``)."""
    if not max_tokens and not max_sentences:
        raise ValueError("training batches need --max-tokens or --batch-size")
    batches = [np.asarray(order)]
    if max_tokens:
        bounds = np.flatnonzero(np.diff(np.cumsum(costs[order]) // max_tokens)) + 1
        batches = np.split(np.asarray(order), bounds)
    if max_sentences:
        batches = [part for b in batches if len(b) for part in np.array_split(b, math.ceil(len(b) / max_sentences))]
    return [b for b in batches if len(b)]


def random_batches(costs: np.ndarray, indices: np.ndarray, rng: np.random.RandomState,
                   max_sentences: Optional[int] = None, max_tokens: Optional[int] = None,
                   group_by_size: bool = False) -> List[np.ndarray]:
    """The authors' ``get_iterator(shuffle=True)`` over ``indices``, with their draws from ``rng``: a
    permutation (stably sorted by cost with ``group_by_size``: ties stay random), ``cut_batches``, the
    batches in random order."""
    order = indices[rng.permutation(len(indices))]
    if group_by_size:
        order = order[np.argsort(costs[order], kind="mergesort")]
    batches = cut_batches(order, costs, max_tokens, max_sentences)
    rng.shuffle(batches)
    return batches


class StepBatches:
    """The endless batch stream of one step: shuffled passes over its samples, cut by summed cost."""

    def __init__(self, step: int, costs: np.ndarray, keep: np.ndarray, max_tokens, max_sentences,
                 group_by_size: bool, seed: int, epoch: int):
        self.step, self.costs, self.keep = step, np.asarray(costs, dtype=np.int64), np.asarray(keep, dtype=np.int64)
        if len(self.keep) == 0:
            raise ValueError(f"step {step}: no sample left to train on")
        self.max_tokens, self.max_sentences = max_tokens, max_sentences
        self.group_by_size, self.seed, self.epoch = group_by_size, seed, epoch
        self.pass_ = -1
        self.batches: List[np.ndarray] = []
        self.cursor = 0

    def new_pass(self) -> List[np.ndarray]:
        """Batches of the next pass (a fresh permutation, seeded by seed, epoch, step and pass)."""
        self.pass_ += 1
        rng = np.random.RandomState([self.seed % 2**32, self.epoch, self.step, self.pass_])
        return random_batches(self.costs, self.keep, rng, self.max_sentences, self.max_tokens, self.group_by_size)

    def next(self) -> np.ndarray:
        if self.cursor == len(self.batches):
            self.batches, self.cursor = self.new_pass(), 0
        self.cursor += 1
        return self.batches[self.cursor - 1]


class EpochSchedule:
    """Batches of one training epoch in the authors' step order (see the module doc).

    ``groups``: the step groups in loop order. ``lambdas(step, iteration)``: the step's weight (0 = skip).
    ``iterations``: iterations per epoch; global iteration numbers continue across epochs.
    """

    def __init__(self, groups: Sequence[StepGroup], streams: Sequence[StepBatches],
                 lambdas: Callable[[int, int], float], seed: int, replicas: int = 1):
        self.groups, self.streams, self.lambdas = list(groups), list(streams), lambdas
        self.seed, self.replicas = seed, replicas

    def batches(self, epoch: int, iterations: int) -> List[List[Draw]]:
        rng = np.random.default_rng((self.seed, epoch, 7919))
        out = []
        for it in range(iterations):
            iteration = (epoch - 1) * iterations + it
            for group in self.groups:
                for step in group.order(rng):
                    if self.lambdas(step, iteration) == 0:
                        continue
                    stream = self.streams[step]
                    for _ in range(self.replicas):
                        batch = stream.next()
                        out.append([Draw(step, int(i), epoch, stream.pass_, iteration) for i in batch])
        return out


def draws_per_iteration(groups: Sequence[StepGroup], n_steps: int) -> np.ndarray:
    """Expected number of draws of each step in one iteration."""
    out = np.zeros(n_steps)
    for group in groups:
        for pos, step in enumerate(group.steps):
            if group.sample:
                share = 1.0 / len(group.steps) if group.probs is None else float(group.probs[pos])
                out[step] += min(5, len(group.steps)) * share
            else:
                out[step] += 1.0
    return out


def expected_iterations(groups: Sequence[StepGroup], batches_per_pass: Sequence[int], replicas: int) -> int:
    """Iterations that use every step's data once in expectation (the largest step sets the epoch)."""
    draws = draws_per_iteration(groups, len(batches_per_pass))
    need = [math.ceil(n / (replicas * d)) for n, d in zip(batches_per_pass, draws) if d > 0]
    return max([1] + need)


def iterations_for_sentences(groups: Sequence[StepGroup], mean_batch: Sequence[float], replicas: int,
                             sentences: int) -> int:
    """Iterations that process ``sentences`` sentences in expectation (the authors' --epoch_size unit)."""
    draws = draws_per_iteration(groups, len(mean_batch))
    per_iteration = replicas * float(np.dot(draws, mean_batch))
    return max(1, math.ceil(sentences / per_iteration))
