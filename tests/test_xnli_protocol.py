"""The authors' XNLI protocol in task ``xnli``: training batches and epochs against their code
(``ParallelDataset.get_iterator`` and the epoch loop of ``xlm/evaluation/xnli.py``, run as an oracle), the
task's batch iterator (new random batches every epoch, reproducible from the seed, the same with data-loader
workers), bad settings, and the sweep's model selection and table on hand-made scores."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import fairseq_xlm  # noqa: F401  (registers the task)
from fairseq.data import Dictionary
from fairseq_xlm.cli.evaluate_xnli import RunScores, select_run, sweep_lines
from fairseq_xlm.data.classification_dataset import XlmClassificationDataset, epoch_batches, epoch_seed
from fairseq_xlm.tasks.xnli import XlmXnliConfig, XlmXnliTask

AUTHORS = Path(__file__).resolve().parents[2] / "shared" / "anchors" / "xlm-authors"
EOS = 2


def authors_dataset(len1, len2):
    """The authors' ParallelDataset over sentence pairs of the given lengths (tokens without </s>)."""
    if not (AUTHORS / "xlm" / "data" / "dataset.py").is_file():
        pytest.skip(f"the authors' code is not at {AUTHORS}")
    if str(AUTHORS) not in sys.path:
        sys.path.insert(0, str(AUTHORS))
    from xlm.data.dataset import ParallelDataset

    rng = np.random.RandomState(0)

    def flat(lengths):
        sent, pos = [], []
        for n in lengths:
            pos.append((len(sent), len(sent) + n))
            sent += rng.randint(5, 50, size=n).tolist() + [EOS]
        return np.array(sent, dtype=np.int64), np.array(pos, dtype=np.int64)

    params = type("Params", (), {})()
    params.eos_index, params.pad_index, params.max_batch_size = EOS, 1, 0
    params.batch_size, params.tokens_per_batch = 8, -1  # set per epoch by authors_epoch
    return ParallelDataset(*flat(len1), *flat(len2), params)


def authors_epoch(ds, seed, epoch, batch_size, tokens_per_batch, group_by_size, epoch_size):
    """Batch indices of one epoch of the authors' XNLI.train(): get_iterator(shuffle=True), stop at ns >= epoch_size.
    Their ParallelDataset draws from numpy's global generator, seeded here as ours is."""
    ds.batch_size, ds.tokens_per_batch = batch_size, tokens_per_batch
    np.random.seed(epoch_seed(seed, epoch))
    out, ns = [], 0
    for _, _, idx in ds.get_iterator(shuffle=True, group_by_size=group_by_size, return_indices=True):
        out.append(idx.tolist())
        ns += len(idx)
        if epoch_size != -1 and ns >= epoch_size:
            break
    return out


@pytest.mark.parametrize("batch_size,tokens,group_by_size,epoch_size", [
    (8, -1, False, -1), (8, -1, False, 40), (8, -1, True, 40), (4, -1, False, 13),
    (None, 120, False, -1), (None, 120, True, 50),
])
def test_epochs_are_the_authors_draw_for_draw(batch_size, tokens, group_by_size, epoch_size):
    rng = np.random.RandomState(1)
    len1, len2 = rng.randint(1, 30, size=103), rng.randint(1, 15, size=103)
    ds = authors_dataset(len1, len2)
    sizes = len1 + len2 + 4  # the authors' size of a pair; ours passes its real token count
    for epoch in (1, 2, 3):
        ours = epoch_batches(sizes, np.arange(103), 7, epoch, batch_size, tokens if tokens > 0 else None,
                             group_by_size, epoch_size)
        assert [b.tolist() for b in ours] == authors_epoch(ds, 7, epoch, batch_size or 8, tokens, group_by_size,
                                                           epoch_size)
    if tokens < 0 and epoch_size < 0:  # near-equal batches: ceil(103 / B) of them
        assert sorted(map(len, ours)) == sorted(map(len, np.array_split(np.arange(103), math.ceil(103 / batch_size))))


def test_epoch_size_by_hand():
    # 26 examples, batch 4: array_split gives 7 batches of 4, 4, 4, 4, 4, 3, 3; an epoch of 10 sentences
    # stops after the third batch whatever their order (4+4+4, 3+4+4 or 3+3+4 all reach 10 there).
    for epoch in range(1, 6):
        batches = epoch_batches(np.ones(26), np.arange(26), 1, epoch, 4, None, False, 10)
        assert len(batches) == 3 and len({i for b in batches for i in b.tolist()}) == sum(map(len, batches))
    whole = [b.tolist() for b in epoch_batches(np.ones(26), np.arange(26), 1, 1, 4, None, False, 0)]
    assert sorted(i for b in whole for i in b) == list(range(26))
    for longer in (-1, 26, 1000):  # -1, or at least the data: the whole permutation
        assert [b.tolist() for b in epoch_batches(np.ones(26), np.arange(26), 1, 1, 4, None, False, longer)] == whole


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = [torch.tensor(r) for r in rows]
        self.sizes = np.array([len(r) for r in rows])

    def __getitem__(self, i):
        return self.rows[i]

    def __len__(self):
        return len(self.rows)


def _task(n=37, **overrides):
    """An xnli task (no files) whose train and valid sets are ``n`` single texts of lengths 2..12."""
    d = Dictionary()
    cfg = OmegaConf.structured(XlmXnliConfig(data="unused", langs="en,es", **overrides))
    task = XlmXnliTask(cfg, d, ["a", "b", "c"])
    rows = [[5 + (i % 7)] * (1 + (i * 5) % 11) + [d.eos()] for i in range(n)]
    for split in ("train", "valid"):
        task.datasets[split] = XlmClassificationDataset(_Tokens(rows), np.arange(n) % 3, 0, d.eos(), d.pad())
    return task


def _epochs(task, split="train", seed=1, num_workers=0, epochs=3, **kwargs):
    """Example ids of every batch, per epoch, as fairseq's trainer draws them (a new iterator per epoch)."""
    out = []
    for epoch in range(1, epochs + 1):
        itr = task.get_batch_iterator(task.dataset(split), max_sentences=4, seed=seed, num_workers=num_workers,
                                      epoch=epoch, **kwargs)
        out.append([batch["id"].tolist() for batch in itr.next_epoch_itr(shuffle=True)])
    return out


def test_training_batches_are_new_every_epoch_and_reproducible():
    task = _task()
    epochs = _epochs(task)
    members = [{frozenset(b) for b in batches} for batches in epochs]
    assert members[0] != members[1] and members[1] != members[2]  # new batches, not reordered ones
    for batches in epochs:
        assert sorted(i for b in batches for i in b) == list(range(37))
        assert sorted(map(len, batches)) == [3] * 3 + [4] * 7  # array_split: ceil(37 / 4) = 10 batches
    sizes = task.dataset("train").sizes
    for epoch, batches in enumerate(epochs, start=1):
        expected = epoch_batches(sizes, np.arange(37), 1, epoch, 4, None, False, -1)
        assert batches == [b.tolist() for b in expected]
    assert _epochs(task) == epochs  # the same seed gives the same batches
    assert _epochs(task, num_workers=1) == epochs  # and so does a data-loader worker
    assert _epochs(task, seed=2)[0] != epochs[0]
    # one iterator carried across epochs (fairseq reuses it when it can) gives the same batches
    itr = task.get_batch_iterator(task.dataset("train"), max_sentences=4, seed=1, epoch=1)
    assert [[b["id"].tolist() for b in itr.next_epoch_itr()] for _ in range(3)] == epochs


def test_epoch_size_and_group_by_size_through_the_task():
    epochs = _epochs(_task(epoch_size=10))
    assert all(len(batches) == 3 and sum(map(len, batches)) >= 10 for batches in epochs)
    task = _task(group_by_size=True)
    sizes = task.dataset("train").sizes
    for batches in _epochs(task):
        # sorted, then cut: a batch holds no size that lies strictly between two sizes of another batch
        spans = sorted((sizes[b].min(), sizes[b].max()) for b in batches)
        assert all(hi <= lo for (_, hi), (lo, _) in zip(spans, spans[1:]))


def test_evaluation_batches_stay_sorted_and_complete():
    task = _task()
    epochs = _epochs(task, split="valid", required_batch_size_multiple=8)
    sizes = task.dataset("valid").sizes
    for batches in epochs:
        assert sorted(i for b in batches for i in b) == list(range(37))
        assert max(sizes[b].max() - sizes[b].min() for b in map(np.array, batches)) <= 1
    assert all({frozenset(b) for b in batches} == {frozenset(b) for b in epochs[0]} for batches in epochs)


def test_bad_schedule_settings():
    with pytest.raises(ValueError, match=r"--epoch-size -5: give sentences per epoch, or -1"):
        _task(epoch_size=-5)
    cfg = OmegaConf.create({
        "task": OmegaConf.structured(XlmXnliConfig(data="unused", langs="en,es")),
        "dataset": {"validate_interval_updates": 500, "disable_validation": False},
        "checkpoint": {"save_interval_updates": 0, "no_save": False},
    })
    task = XlmXnliTask(cfg.task, Dictionary(), ["a", "b"])
    with pytest.raises(ValueError, match=r"--validate-interval-updates 500 validates between saves "
                                         r"\(--save-interval-updates 0\).*add --save-interval-updates 500"):
        task.load_dataset("train")
    cfg.checkpoint.save_interval_updates = 500
    with pytest.raises(FileNotFoundError):  # past the check: no data here
        task.load_dataset("train")


def test_sweep_selection_and_table_by_hand():
    def run(name, lr, batch, valid, test):
        return RunScores(name, {"valid": dict(zip(("en", "es"), valid)), "test": dict(zip(("en", "es"), test))},
                         lr, batch)

    runs = [run("a", 5e-6, 4, (80.0, 60.0), (79.0, 61.0)),    # valid mean 70
            run("b", 2.5e-5, 8, (76.0, 68.0), (75.0, 66.0)),  # valid mean 72: selected
            run("c", 1.25e-4, 4, (70.0, 69.0), (71.0, 70.0))]  # best es valid, not the best mean
    assert select_run(runs) is runs[1]
    assert select_run([runs[0], run("a2", 1e-5, 8, (60.0, 80.0), (1.0, 1.0))]) is runs[0]  # first of equals
    assert sweep_lines(runs) == [
        "| run | lr | batch | valid avg | test en | test es | test avg |",
        "|---|---:|---:|---:|---:|---:|---:|",
        "| a | 5e-06 | 4 | 70.0 | 79.0 | 61.0 | 70.0 |",
        "| **b** (selected: best valid avg) | 2.5e-05 | 8 | 72.0 | 75.0 | 66.0 | 70.5 |",
        "| c | 0.000125 | 4 | 69.5 | 71.0 | 70.0 | 70.5 |",
        # en from a (best en valid 80), es from c (best es valid 69): (79 + 70) / 2
        "| per-language best of sweep (each language's run chosen on its own valid accuracy; not one model) "
        "| | | | 79.0 | 70.0 | 74.5 |",
    ]
    with pytest.raises(ValueError, match="same languages"):
        sweep_lines([runs[0], RunScores("d", {"valid": {"en": 1.0}, "test": {"en": 1.0}}, 1e-5, 8)])
