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

The epoch is generated, not stored: ``EpochSchedule.draws`` walks it batch by batch and builds only one
rank's ``Draw`` lists (``schedule_iterator.py`` hands them to fairseq's data loader), while the step draws
(a seeded generator per epoch) and the streams' cursors advance through every batch, so a rank, a resumed
run or the eager ``batches()`` list all see the same batches. What stays per step is the current pass: a
permutation of the step's samples, its cut and its batch order (``Pass``: 4 bytes a sample), because the
authors' batches are a random permutation of the whole step, grouped by size; with a sharded data path a
step holds one shard's samples, so this memory follows the shard size, not the corpus.
"""

import copy
import math
from dataclasses import dataclass
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

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


def cut_sizes(costs_in_order: np.ndarray, max_tokens: Optional[int], max_sentences: Optional[int]) -> np.ndarray:
    """Sizes of the authors' batches over samples of these costs, in order (``Dataset.get_iterator``): a new
    batch where the running sum passes a multiple of ``max_tokens`` (``cumsum // tokens_per_batch``), and/or
    each part split into ``ceil(n / max_sentences)`` batches whose sizes differ by at most one (their
    ``np.array_split``: the first ``n % k`` one larger). Vectorised: no Python loop over batches."""
    if not max_tokens and not max_sentences:
        raise ValueError("training batches need --max-tokens or --batch-size")
    n = len(costs_in_order)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    seg = np.array([n], dtype=np.int64)
    if max_tokens:
        starts = np.flatnonzero(np.diff(np.cumsum(costs_in_order) // max_tokens)) + 1
        seg = np.diff(np.concatenate([[0], starts, [n]])).astype(np.int64)
    if max_sentences:
        parts = -(-seg // max_sentences)
        q, r = np.divmod(seg, parts)
        within = np.arange(int(parts.sum())) - np.repeat(np.cumsum(parts) - parts, parts)
        seg = np.repeat(q, parts) + (within < np.repeat(r, parts))
    return seg[seg > 0]


def cut_batches(order: np.ndarray, costs, max_tokens: Optional[int],
                max_sentences: Optional[int]) -> List[np.ndarray]:
    """``order`` cut into the authors' batches (see ``cut_sizes``)."""
    order = np.asarray(order)
    sizes = cut_sizes(costs[order], max_tokens, max_sentences)
    return np.split(order, np.cumsum(sizes)[:-1]) if len(sizes) else []


class Pass:
    """One pass over a step's samples: the permuted samples, the batch cut and the batches' random order.
    Batches are sliced on demand, so a pass holds three arrays, never a list of one array per batch."""

    def __init__(self, order: np.ndarray, sizes: np.ndarray, batch_order: np.ndarray):
        # int32 halves what a pass keeps resident; sample numbers of a step stay far below 2**31
        self.order = order.astype(np.int32) if len(order) < 2**31 else order
        self.ends, self.sizes, self.batch_order = np.cumsum(sizes), sizes, batch_order

    def __len__(self):
        return len(self.batch_order)

    def __getitem__(self, i: int) -> np.ndarray:
        b = self.batch_order[i]
        return self.order[self.ends[b] - self.sizes[b]:self.ends[b]]


def random_pass(costs, indices: Optional[np.ndarray], rng: np.random.RandomState,
                max_sentences: Optional[int] = None, max_tokens: Optional[int] = None,
                group_by_size: bool = False) -> Pass:
    """The authors' ``get_iterator(shuffle=True)`` over ``indices`` (None: all ``len(costs)`` samples), with
    their draws from ``rng``: a permutation (stably sorted by cost with ``group_by_size``: ties stay random),
    ``cut_sizes``, the batches in random order."""
    perm = rng.permutation(len(costs) if indices is None else len(indices))
    order = perm if indices is None else np.asarray(indices)[perm]
    if group_by_size and hasattr(costs, "stable_sort"):  # stream blocks: the same order without a sort
        order = costs.stable_sort(order)
    elif group_by_size:
        order = order[np.argsort(costs[order], kind="mergesort")]
    sizes = cut_sizes(costs[order], max_tokens, max_sentences)
    batch_order = np.arange(len(sizes))
    rng.shuffle(batch_order)  # the same draws and result as their rng.shuffle of the list of batches
    return Pass(order, sizes, batch_order)


def random_batches(costs: np.ndarray, indices: np.ndarray, rng: np.random.RandomState,
                   max_sentences: Optional[int] = None, max_tokens: Optional[int] = None,
                   group_by_size: bool = False) -> List[np.ndarray]:
    """``random_pass`` as a list of batches (the authors' ``get_iterator`` output)."""
    one = random_pass(costs, indices, rng, max_sentences, max_tokens, group_by_size)
    return [one[i].astype(np.int64) for i in range(len(one))]


class StepBatches:
    """The endless batch stream of one step: shuffled passes over its samples, cut by summed cost.

    ``costs``: an array, or any object indexable by index arrays (``token_stream.BlockCosts``); ``keep``: the
    samples to train on, None = all. ``reset(epoch)`` rewinds it to the epoch's first pass; only the current
    pass is held (``Pass``), and ``advance()`` moves through it without materialising batches.
    """

    def __init__(self, step: int, costs, keep: Optional[np.ndarray], max_tokens, max_sentences,
                 group_by_size: bool, seed: int, epoch: int):
        self.step = step
        self.costs = costs if hasattr(costs, "sorted_values") else np.asarray(costs, dtype=np.int64)
        self.keep = None if keep is None else np.asarray(keep, dtype=np.int64)
        if (len(self.costs) if self.keep is None else len(self.keep)) == 0:
            raise ValueError(f"step {step}: no sample left to train on")
        self.max_tokens, self.max_sentences = max_tokens, max_sentences
        self.group_by_size, self.seed = group_by_size, seed
        self.reset(epoch)

    def reset(self, epoch: int) -> None:
        self.epoch, self.pass_, self.current, self.cursor = epoch, -1, None, 0

    def _pass(self, pass_: int) -> Pass:
        rng = np.random.RandomState([self.seed % 2**32, self.epoch, self.step, pass_])
        return random_pass(self.costs, self.keep, rng, self.max_sentences, self.max_tokens, self.group_by_size)

    def new_pass(self) -> List[np.ndarray]:
        """Batches of the next pass (a fresh permutation, seeded by seed, epoch, step and pass)."""
        self.pass_ += 1
        one = self._pass(self.pass_)
        return [one[i] for i in range(len(one))]

    def pass_length(self) -> int:
        """Batches per pass. Length-grouped passes cut the sorted costs whatever the permutation, so no pass
        is drawn; otherwise the count of this epoch's first pass."""
        if not self.group_by_size:
            return len(self._pass(0))
        if self.keep is None and hasattr(self.costs, "sorted_values"):
            ordered = self.costs.sorted_values()
        else:
            ordered = np.sort(self.costs[np.arange(len(self.costs)) if self.keep is None else self.keep])
        return len(cut_sizes(ordered, self.max_tokens, self.max_sentences))

    def advance(self) -> int:
        """Move to the next batch (drawing a new pass when one is used up); its position in ``current``."""
        if self.current is None or self.cursor == len(self.current):
            self.pass_ += 1
            self.current, self.cursor = self._pass(self.pass_), 0
        self.cursor += 1
        return self.cursor - 1

    def next(self) -> np.ndarray:
        return self.current[self.advance()]


class EpochSchedule:
    """Batches of one training epoch in the authors' step order (see the module doc), generated lazily.

    ``groups``: the step groups in loop order. ``lambdas(step, iteration)``: the step's weight (0 = skip).
    ``iterations``: iterations per epoch; global iteration numbers continue across epochs. ``draws`` walks the
    epoch batch by batch and materialises only the batches of one data-parallel rank from a position on;
    ``batches`` is the whole epoch as a list (the same batches: one walk, two views).
    """

    def __init__(self, groups: Sequence[StepGroup], streams: Sequence[StepBatches],
                 lambdas: Callable[[int, int], float], seed: int, replicas: int = 1):
        self.groups, self.streams, self.lambdas = list(groups), list(streams), lambdas
        self.seed, self.replicas = seed, replicas

    def _slots(self, epoch: int, iterations: int) -> Iterator[Tuple[int, int]]:
        """(step, iteration) of every batch of the epoch, in order (``replicas`` per drawn step)."""
        rng = np.random.default_rng((self.seed, epoch, 7919))
        for it in range(iterations):
            iteration = (epoch - 1) * iterations + it
            for group in self.groups:
                for step in group.order(rng):
                    if self.lambdas(step, iteration) != 0:
                        for _ in range(self.replicas):
                            yield step, iteration

    def count(self, epoch: int, iterations: int) -> int:
        """Batches in the epoch (a replay of the step draws only: no pass is drawn)."""
        return sum(1 for _ in self._slots(epoch, iterations))

    def draws(self, epoch: int, iterations: int, rank: int = 0, ranks: int = 1,
              start: int = 0) -> Iterator[List[Draw]]:
        """Rank ``rank``'s batches (every ``ranks``-th from ``rank``, as fairseq's ``ShardedIterator``) from its
        ``start``-th on; the streams advance through every batch, so any start gives the same batches."""
        streams = [copy.copy(stream) for stream in self.streams]  # walks never share cursors
        for stream in streams:
            stream.reset(epoch)
        for g, (step, iteration) in enumerate(self._slots(epoch, iterations)):
            stream = streams[step]
            pos = stream.advance()
            if g % ranks == rank and g // ranks >= start:
                yield [Draw(step, int(i), epoch, stream.pass_, iteration) for i in stream.current[pos]]

    def batches(self, epoch: int, iterations: int) -> List[List[Draw]]:
        return list(self.draws(epoch, iterations))


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
