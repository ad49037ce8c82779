"""fairseq's ``EpochBatchIterator`` over an ``EpochSchedule`` walked lazily, one rank's batches at a time.

fairseq's iterator freezes an epoch as a tuple of every batch of every rank (``frozen_batches``), then keeps
every ``num_shards``-th: each of a node's processes builds the whole epoch and drops all but its share, and
the trainer's ``first_batch`` builds it once more. Here ``ordered_batches`` returns ``RankBatches``, a view
that generates the rank's batches while the data loader asks for them (``EpochSchedule.draws``); its length
is a replay of the step draws only, and a resumed run's offset (``batches[offset:]``) walks the schedule to
that point without materialising a batch. The batches are those of the eager list, sharded as fairseq
would (tested), so resuming mid-epoch stays exact.
"""

from typing import Callable, Iterator, List, Tuple

from fairseq.data import iterators

from .schedule import Draw, EpochSchedule


class RankBatches:
    """The batches of one rank from ``start`` on, generated on iteration; sliceable as ``[offset:]``."""

    def __init__(self, schedule: EpochSchedule, epoch: int, iterations: int, rank: int, ranks: int,
                 total: int, start: int = 0):
        self.schedule, self.epoch, self.iterations = schedule, epoch, iterations
        self.rank, self.ranks, self.total, self.start = rank, ranks, total, start

    def __len__(self):
        # fairseq's ShardedIterator pads every rank to ceil(total / ranks) batches; totals are multiples of
        # ranks here (each drawn step is workers x update-freq batches), so no rank gets padding
        return max(0, -(-self.total // self.ranks) - self.start)

    def __getitem__(self, index):
        if not isinstance(index, slice) or index.step not in (None, 1) or index.stop is not None:
            raise TypeError("RankBatches supports only [offset:] (what fairseq's resume asks for)")
        return RankBatches(self.schedule, self.epoch, self.iterations, self.rank, self.ranks, self.total,
                           self.start + (index.start or 0))

    def __iter__(self) -> Iterator[List[Draw]]:
        return self.schedule.draws(self.epoch, self.iterations, self.rank, self.ranks, self.start)


class ScheduleBatchIterator(iterators.EpochBatchIterator):
    """``EpochBatchIterator`` whose epochs come from ``make_schedule(epoch) -> (schedule, iterations)``."""

    def __init__(self, dataset, collate_fn, make_schedule: Callable[[int], Tuple[EpochSchedule, int]], **kwargs):
        super().__init__(dataset=dataset, collate_fn=collate_fn, batch_sampler=make_schedule,
                         disable_shuffling=True, **kwargs)
        self._make_schedule = make_schedule
        self._rank_batches = {}  # epoch -> RankBatches (its length is a replay: done once per epoch)

    def rank_batches(self, epoch: int) -> RankBatches:
        if epoch not in self._rank_batches:
            schedule, iterations = self._make_schedule(epoch)
            total = schedule.count(epoch, iterations)
            self._rank_batches = {epoch: RankBatches(schedule, epoch, iterations, self.shard_id, self.num_shards,
                                                     total)}
        return self._rank_batches[epoch]

    @property
    def frozen_batches(self):
        raise RuntimeError("ScheduleBatchIterator never freezes an epoch; use rank_batches(epoch)")

    @property
    def first_batch(self):
        first = next(iter(self.rank_batches(self.epoch)), None)
        if first is None:
            raise RuntimeError("the training schedule of this epoch has no batch (all lambdas 0?)")
        return self.collate_fn([self.dataset[d] for d in first])

    def __len__(self):
        return len(self.rank_batches(self.epoch))

    def ordered_batches(self, epoch, fix_batches_to_gpus, shuffle):
        return self.rank_batches(epoch)
