"""What ``xlm_pretrain`` and ``unsupervised_mt`` share: the authors' schedule (one update = one step kind).

A task that mixes step kinds subclasses ``ScheduledStepsTask`` and provides ``step_groups()`` (the order
of the authors' loop) and ``step_weight(name, iteration)`` (its lambdas); its training split is a
``StepDataset``. ``get_batch_iterator`` then generates each epoch with ``schedule.EpochSchedule``, each rank
only its own batches as training asks for them (``data/schedule_iterator.py``): the batches are fixed by
(seed, epoch), never reshuffled by fairseq, and one fairseq update is one step.
"""

import logging
from dataclasses import dataclass, field
from typing import List, Tuple
from weakref import WeakKeyDictionary

from fairseq.data import iterators
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask
from omegaconf import II
from omegaconf.errors import InterpolationResolutionError

from ..data.schedule import (Draw, EpochSchedule, StepBatches, StepGroup, expected_iterations,
                             iterations_for_sentences)
from ..data.schedule_iterator import ScheduleBatchIterator
from ..data.step_dataset import StepDataset
from ..models import memory_usage
from ..optim.foreach_adam import use_foreach_adam
from ..precision import AUTOCAST_HELP

logger = logging.getLogger(__name__)


def linked_value(cfg, name: str, default):
    """A value linked from another fairseq config group, or ``default`` in a task config built alone."""
    try:
        value = getattr(cfg, name, default)
    except InterpolationResolutionError:
        return default
    return default if isinstance(value, str) and value.startswith("${") else value


@dataclass
class ScheduleConfig(FairseqDataclass):
    """Step sampling, batching and epoch length, as the authors' train.py."""

    lang_sampling_alpha: float = field(default=-1.0, metadata={
        "help": "the authors' lg_sampling_factor: sampled steps (monolingual and pairs apart, min(5, n) draws with "
                "replacement per iteration) weighted by q ∝ (sentences)**alpha; -1 = uniform draws"})
    group_by_size: bool = field(default=True, metadata={
        "help": "training batches of similar lengths (the authors' default): a random permutation sorted by "
                "length, cut by summed length, batches in random order; false = cut the permutation as it is"})
    epoch_iterations: int = field(default=0, metadata={
        "help": "iterations (one pass of the step loop) per epoch; 0 = --epoch-size, else enough to use the "
                "largest step's data once in expectation"})
    epoch_size: int = field(default=0, metadata={
        "help": "sentences (samples) per epoch, the authors' --epoch_size unit, counting the real sentences of "
                "every step's batches (theirs count a nominal --batch_size per step); 0 = see --epoch-iterations"})
    autocast_bf16: bool = field(default=False, metadata={"help": AUTOCAST_HELP})
    update_freq: List[int] = II("optimization.update_freq")
    seed: int = II("common.seed")


class ScheduledStepsTask(FairseqTask):
    """Training batches in the authors' step order; see the module doc."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self._epoch_iterations = WeakKeyDictionary()  # iterations per epoch, by dataset and batch settings

    def step_groups(self, dataset: StepDataset) -> List[StepGroup]:
        raise NotImplementedError

    def reduce_metrics(self, logging_outputs, criterion):
        """fairseq's and the criterion's metrics, plus the memory layers' diagnostics (``memory_usage``)."""
        super().reduce_metrics(logging_outputs, criterion)
        memory_usage.reduce_metrics(logging_outputs)

    def step_weight(self, name: str, iteration: int) -> float:
        raise NotImplementedError

    def optimizer_step(self, optimizer, model, update_num):
        """fairseq's CPU Adam step with foreach ops (the same numbers, less per-update overhead)."""
        use_foreach_adam(optimizer)
        optimizer.step()

    def _update_freq(self, epoch: int) -> int:
        freq = list(linked_value(self.cfg, "update_freq", None) or [1])
        return int(freq[epoch - 1] if epoch <= len(freq) else freq[-1])

    def epoch_schedule(self, dataset: StepDataset, epoch: int, seed: int, max_tokens, max_sentences,
                       replicas: int) -> Tuple[EpochSchedule, int]:
        """The schedule of ``epoch`` and its iterations (``replicas`` = workers x --update-freq batches per
        step draw); nothing is drawn until it is walked."""
        groups = self.step_groups(dataset)
        streams = [StepBatches(k, dataset.costs[name], dataset.keep[name], max_tokens, max_sentences,
                               self.cfg.group_by_size, seed, epoch) for k, name in enumerate(dataset.names)]
        iterations = self.cfg.epoch_iterations
        key = (seed, max_tokens, max_sentences, replicas, self.cfg.epoch_size)
        measured = self._epoch_iterations.setdefault(dataset, {})  # weak: a new shard's dataset measures anew
        if iterations <= 0 and key in measured:
            iterations = measured[key]
        elif iterations <= 0:  # the same for every epoch of this dataset
            for stream in streams:
                stream.reset(1)
            lengths = [stream.pass_length() for stream in streams]
            if self.cfg.epoch_size > 0:
                mean_batch = [dataset.kept(name) / n for name, n in zip(dataset.names, lengths)]
                iterations = iterations_for_sentences(groups, mean_batch, replicas, self.cfg.epoch_size)
            else:
                iterations = expected_iterations(groups, lengths, replicas)
            measured[key] = iterations
        schedule = EpochSchedule(groups, streams, lambda k, it: self.step_weight(dataset.names[k], it), seed,
                                 replicas)
        return schedule, iterations

    def epoch_batches(self, dataset: StepDataset, epoch: int, seed: int, max_tokens, max_sentences,
                      replicas: int) -> List[List[Draw]]:
        """Every training batch of ``epoch`` as one list (what training walks lazily, see ``epoch_schedule``)."""
        schedule, iterations = self.epoch_schedule(dataset, epoch, seed, max_tokens, max_sentences, replicas)
        return schedule.batches(epoch, iterations)

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None, max_positions=None,
                           ignore_invalid_inputs=False, required_batch_size_multiple=1, seed=1, num_shards=1,
                           shard_id=0, num_workers=0, epoch=1, data_buffer_size=0, disable_iterator_cache=False,
                           skip_remainder_batch=False, grouped_shuffling=False, update_epoch_batch_itr=False):
        if not isinstance(dataset, StepDataset):
            return super().get_batch_iterator(
                dataset, max_tokens, max_sentences, max_positions, ignore_invalid_inputs,
                required_batch_size_multiple, seed, num_shards, shard_id, num_workers, epoch, data_buffer_size,
                disable_iterator_cache, skip_remainder_batch, grouped_shuffling, update_epoch_batch_itr)
        common = dict(dataset=dataset, collate_fn=dataset.collater, seed=seed, num_shards=num_shards,
                      shard_id=shard_id, num_workers=num_workers, epoch=epoch, buffer_size=data_buffer_size)
        if dataset is self.datasets.get("train"):
            def make_schedule(ep):
                replicas = num_shards * self._update_freq(ep)
                return self.epoch_schedule(dataset, ep, seed, max_tokens, max_sentences, replicas)
            # each rank generates only its own batches, update by update (see data/schedule_iterator.py)
            return ScheduleBatchIterator(make_schedule=make_schedule, **common)

        def make_batches(ds, ep):
            return ds.validation_batches(max_tokens, max_sentences)
        # disable_shuffling: the order of the batches is the schedule.
        return iterators.EpochBatchIterator(batch_sampler=make_batches, disable_shuffling=True, **common)
