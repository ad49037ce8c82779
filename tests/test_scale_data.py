"""The scalable data path: stream blocks cut from the memory map (fairseq's TokenBlockDataset as the oracle), no
warm-up read, vectorised batch cuts equal to the authors' loop, lazy per-rank batches equal to the eager epoch,
exact mid-epoch resume, and sharded data-bins rotating one shard per epoch (``prepare --shards``)."""

import logging
import json
import os
import pickle
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from fairseq.data import Dictionary, TokenBlockDataset, data_utils
from fairseq.data.indexed_dataset import MMapIndexedDataset

import fairseq_xlm  # noqa: F401
from fairseq_xlm.cli import prepare
from fairseq_xlm.data import layout, manifest
from fairseq_xlm.data.schedule import cut_batches, cut_sizes, random_batches
from fairseq_xlm.data.token_stream import BlockCosts, SentenceDataset, StreamBlockDataset, TokenStream
from fairseq_xlm.tasks.xlm_pretrain import XlmPretrainConfig, XlmPretrainTask

from conftest import BIBLE_LANGS, BIBLE_MONO, BIBLE_PARA, BIBLE_VOCAB


def pretrain_task(data, **overrides):
    cfg = XlmPretrainConfig(data=str(data), langs="en,es", mlm_steps="en,es,en-es", seed=1, tokens_per_sample=64)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return XlmPretrainTask.setup_task(cfg)


# ---------------------------------------------------------------- streams


def test_stream_blocks_equal_fairseqs_token_blocks(bible_databin):
    prefix = str(bible_databin / "train.en")
    mono = data_utils.load_indexed_dataset(prefix, None, None)
    for block in (64, 256, 7):
        oracle = TokenBlockDataset(mono, mono.sizes, block, pad=1, eos=2, break_mode="none")
        ours = StreamBlockDataset(TokenStream(prefix), block)
        assert len(ours) == len(oracle)
        np.testing.assert_array_equal(ours.sizes, oracle.sizes)
        for i in range(len(ours)):
            assert torch.equal(ours[i], oracle[i]), (block, i)
    stream = TokenStream(prefix)
    assert stream.sentences == len(mono) and stream.tokens == int(mono.sizes.sum())


def test_every_split_opens_as_fairseqs_indexed_dataset(bible_databin):
    """``layout.load_split`` (xlm_pretrain's pairs, unsupervised_mt, xnli, retrieval) against fairseq's loader on
    every split of a real data-bin: the same items (values and dtype) and sizes; pickled for a data-loader
    worker without its arrays."""
    d = layout.load_dictionary(str(bible_databin))
    prefixes = sorted(str(p)[: -len(".bin")] for p in bible_databin.glob("*.bin"))
    assert len(prefixes) == 3 * 4  # train/valid/test x en, es, en-es.en, en-es.es
    for prefix in prefixes:
        ours = layout.load_split(prefix, d, str(bible_databin))
        oracle = data_utils.load_indexed_dataset(prefix, d, None)
        assert isinstance(oracle, MMapIndexedDataset) and len(ours) == len(oracle) > 0
        np.testing.assert_array_equal(ours.sizes, oracle.sizes)
        for i in range(len(oracle)):
            a, b = ours[i], oracle[i]
            assert a.dtype == b.dtype == torch.int64 and torch.equal(a, b), (prefix, i)
        blob = pickle.dumps(ours)
        assert len(blob) < 1024  # the prefix, dtype and counts; the worker maps the files itself
        copy = pickle.loads(blob)
        np.testing.assert_array_equal(copy.sizes, oracle.sizes)
        assert torch.equal(copy[len(copy) - 1], oracle[len(oracle) - 1])


def _batches(task, dataset, workers, n=12):
    itr = task.get_batch_iterator(dataset, max_tokens=400, seed=2, num_workers=workers).next_epoch_itr()
    out = []
    for sample in itr:
        out.append((sample.get("step"), sample["id"].tolist(), sample["net_input"]["src_tokens"], sample["target"]))
        if len(out) == n:
            break
    return out


def test_unsupervised_mt_batches_are_the_same_from_data_loader_workers(bible_databin):
    """Its splits (``SentenceDataset``s) reach 2 data-loader workers (the same batches as in the process), and
    pickled, as a spawned worker would get them, they read the same sentences."""
    from fairseq_xlm.tasks.unsupervised_mt import UnsupervisedMtConfig, UnsupervisedMtTask

    task = UnsupervisedMtTask.setup_task(UnsupervisedMtConfig(data=str(bible_databin), langs="en,es",
                                                              ae_steps="en,es", mt_steps="en-es", seed=1))
    train = task.load_dataset("train")
    inline = _batches(task, train, 0)
    assert len(inline) == 12 and {s for s, *_ in inline} == {"ae:en", "ae:es", "mt:en-es"}
    for (s1, i1, x1, y1), (s2, i2, x2, y2) in zip(inline, _batches(task, train, 2), strict=True):
        assert (s1, i1) == (s2, i2) and torch.equal(x1, x2) and torch.equal(y1, y2)
    copy = pickle.loads(pickle.dumps(train))
    for name in ("ae:en", "mt:en-es"):
        a, b = train.steps[name], copy.steps[name]
        assert all(torch.equal(a[i]["source"], b[i]["source"]) for i in range(0, len(a), 37))


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return int(re.search(r"rchar: (\d+)", f.read()).group(1))


def _sparse_split(prefix, sentences: int, length: int) -> int:
    """A real index of ``sentences`` sentences of ``length`` uint16 tokens and a sparse .bin (every token 0, no
    disk used); returns the .bin's bytes."""
    sizes = np.full(sentences, length, dtype=np.int32)
    with open(f"{prefix}.idx", "wb") as f:
        f.write(MMapIndexedDataset.Index._HDR_MAGIC + struct.pack("<QBQ", 1, 8, sentences))  # 8: uint16
        f.write(sizes.tobytes())
        f.write((np.arange(sentences, dtype=np.int64) * 2 * length).tobytes())
    with open(f"{prefix}.bin", "wb") as f:
        f.truncate(2 * sentences * length)
    return 2 * sentences * length


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs /proc/self/io")
def test_opening_a_large_stream_reads_no_corpus(tmp_path):
    """A 1 GiB sparse .bin with a real index: fairseq's loader reads all of it, ours only the index header."""
    prefix = str(tmp_path / "train.xx")
    tokens = 2**29  # uint16 tokens: 1 GiB
    _sparse_split(prefix, 2**20, tokens // 2**20)
    before = _rchar()
    blocks = StreamBlockDataset(TokenStream(prefix), 256)
    assert len(blocks) == tokens // 256 and blocks[len(blocks) - 1].shape == (256,)
    ours = _rchar() - before
    assert ours < 2**16, ours
    before = _rchar()
    MMapIndexedDataset(prefix)
    assert _rchar() - before >= 2 * tokens  # the oracle shows the test can fail: its warm-up reads the .bin


def _hand_manifest(folder: Path, dictionary: Path) -> None:
    """A manifest.json as prepare writes it, but with sizes and the largest id only (the load-time check reads
    no more; prepare's checksums would read the whole sparse files)."""
    files = {p.name: {"bytes": p.stat().st_size, "sha256": "-"} for p in folder.glob("*.*") if p.suffix in
             (".bin", ".idx")}
    for name, record in files.items():
        if name.endswith(".bin"):
            record["max_id"] = 0
    (folder / "manifest.json").write_text(json.dumps({
        "format": 1, "langs": ["en", "es"], "pairs": ["en-es"], "spm_model": None, "files": files,
        "dictionary": {"file": os.path.relpath(dictionary, folder),
                       "sha256": manifest.sha256(str(dictionary))}}))


@pytest.fixture(scope="module")
def large_databin(bible_databin, tmp_path_factory):
    """Every split xlm_pretrain, unsupervised_mt and xnli train on, 256 MiB (sparse) each, 2^16 sentences."""
    out = tmp_path_factory.mktemp("large")
    shutil.copy(bible_databin / "dict.txt", out / "dict.txt")
    names = ["train.en", "train.es", "train.en-es.en", "train.en-es.es"]
    total = sum(_sparse_split(out / name, 2**16, 2**11) for name in names)
    (out / "xnli").mkdir()
    (out / "xnli" / "labels.txt").write_text("a\nb\n")
    (out / "xnli" / "train.en.label").write_text("a\n" * 2**16)
    total += sum(_sparse_split(out / "xnli" / f"train.en.input{k}", 2**16, 2**11) for k in (0, 1))
    _hand_manifest(out, out / "dict.txt")
    _hand_manifest(out / "xnli", out / "dict.txt")
    return out, total


def _large_task(kind: str, data: Path):
    from omegaconf import OmegaConf

    from fairseq_xlm.tasks.unsupervised_mt import UnsupervisedMtConfig, UnsupervisedMtTask
    from fairseq_xlm.tasks.xnli import XlmXnliConfig, XlmXnliTask

    if kind == "xlm_pretrain":
        return pretrain_task(data, tokens_per_sample=2**13, max_len=0)
    if kind == "unsupervised_mt":
        return UnsupervisedMtTask.setup_task(UnsupervisedMtConfig(
            data=str(data), langs="en,es", ae_steps="en,es", bt_steps="en-es-en", mt_steps="en-es", seed=1))
    return XlmXnliTask.setup_task(OmegaConf.structured(XlmXnliConfig(data=str(data), langs="en,es")))


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs /proc/self/io")
@pytest.mark.parametrize("kind", ["xlm_pretrain", "unsupervised_mt", "xnli"])
def test_load_dataset_of_every_task_reads_no_corpus(large_databin, kind):
    """A task's load_dataset on 1.5 GiB of (sparse) training data reads a few index headers and label lines,
    not the data: fairseq's loader (the oracle) reads every .bin whole at open."""
    data, total = large_databin
    task = _large_task(kind, data)
    before = _rchar()
    task.load_dataset("train")
    ours = _rchar() - before
    assert len(task.datasets["train"]) > 0
    assert ours < 2**20, ours  # xnli's labels are ~128 KiB of the text; index sizes are read as memory maps
    before = _rchar()
    oracle = [data_utils.load_indexed_dataset(str(data / name), None, None) for name in ("train.en", "train.es")]
    assert _rchar() - before >= total // 3 and len(oracle[0]) == 2**16


def test_bad_index_is_one_clear_error(tmp_path):
    (tmp_path / "x.idx").write_bytes(b"not an index")
    (tmp_path / "x.bin").write_bytes(b"\0\0")
    with pytest.raises(ValueError, match=r"x.idx: not a fairseq mmap index"):
        TokenStream(str(tmp_path / "x"))


# ---------------------------------------------------------------- batch cuts


def _authors_cut(order, costs, max_tokens, max_sentences):
    """The loop as the authors write it: np.split at cumsum // tokens, then np.array_split by sentences."""
    batches = [order]
    if max_tokens:
        batches = np.split(order, np.flatnonzero(np.diff(np.cumsum(costs[order]) // max_tokens)) + 1)
    if max_sentences:
        batches = [p for b in batches if len(b) for p in np.array_split(b, -(-len(b) // max_sentences))]
    return [b for b in batches if len(b)]


def test_vectorised_cut_and_pass_equal_the_authors_loop():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 300))
        costs = rng.integers(1, 120, n)
        order = rng.permutation(n)
        max_tokens = [None, int(rng.integers(50, 2000))][trial % 2]
        max_sentences = [None, int(rng.integers(1, 40))][(trial // 2) % 2] or (None if max_tokens else 8)
        ours = cut_batches(order, costs, max_tokens, max_sentences)
        assert [b.tolist() for b in ours] == [b.tolist() for b in _authors_cut(order, costs, max_tokens,
                                                                              max_sentences)]
        assert sum(cut_sizes(costs[order], max_tokens, max_sentences)) == n
        # a whole pass: permutation, stable length sort, cut, batches shuffled as a list (their draws)
        keep = np.flatnonzero(rng.random(n) < 0.8)
        if len(keep) == 0:
            continue
        a, b = np.random.RandomState([trial, 1]), np.random.RandomState([trial, 1])
        want = keep[a.permutation(len(keep))]
        want = want[np.argsort(costs[want], kind="mergesort")]
        want = _authors_cut(want, costs, max_tokens, max_sentences)
        a.shuffle(want)
        got = random_batches(costs, keep, b, max_sentences, max_tokens, group_by_size=True)
        assert [x.tolist() for x in got] == [x.tolist() for x in want]


def test_block_costs_sort_and_index_as_the_arrays_they_stand_for():
    rng = np.random.default_rng(1)
    for n, size, last in ((1, 5, 5), (7, 256, 256), (50, 256, 3), (9, 64, 63)):
        costs = BlockCosts(n, size, last)
        array = np.array([size] * (n - 1) + [last])
        np.testing.assert_array_equal(costs[np.arange(n)], array)
        np.testing.assert_array_equal(costs.sorted_values(), np.sort(array))
        for _ in range(5):
            order = rng.permutation(n)
            np.testing.assert_array_equal(costs.stable_sort(order), order[np.argsort(array[order], kind="mergesort")])
            a, b = np.random.RandomState([n, 2]), np.random.RandomState([n, 2])
            got = random_batches(costs, None, a, 4, 600, group_by_size=True)
            want = random_batches(array, np.arange(n), b, 4, 600, group_by_size=True)
            assert [x.tolist() for x in got] == [x.tolist() for x in want]


# ---------------------------------------------------------------- lazy batches and resume


@pytest.mark.parametrize("ranks,freq", [(1, 1), (2, 1), (2, 2)])
def test_lazy_rank_batches_equal_the_eager_epoch(bible_databin, ranks, freq):
    task = pretrain_task(bible_databin, epoch_iterations=40, lambda_mlm="0:1,20:0,30:1",  # some steps skipped
                         update_freq=[freq])
    task.load_dataset("train")
    ds = task.datasets["train"]
    for epoch in (1, 2):
        eager = task.epoch_batches(ds, epoch, 1, None, 8, ranks * freq)
        schedule, iterations = task.epoch_schedule(ds, epoch, 1, None, 8, ranks * freq)
        assert schedule.count(epoch, iterations) == len(eager)
        for rank in range(ranks):
            mine = eager[rank::ranks]
            assert list(schedule.draws(epoch, iterations, rank, ranks)) == mine
            assert list(schedule.draws(epoch, iterations, rank, ranks, start=13)) == mine[13:]
            itr = task.get_batch_iterator(ds, max_sentences=8, seed=1, num_shards=ranks, shard_id=rank,
                                          epoch=epoch)
            assert len(itr) == len(mine)
            lazy = [[d for d in b] for b in itr.rank_batches(epoch)]
            assert lazy == mine


def _samples(itr, n=None):
    out = []
    for sample in itr:
        out.append((sample["step"], sample["iteration"], sample["net_input"]["src_tokens"], sample["target"]))
        if n is not None and len(out) == n:
            break
    return out


def test_resume_mid_epoch_gives_the_same_samples(bible_databin):
    task = pretrain_task(bible_databin, epoch_iterations=12)
    task.load_dataset("train")
    ds = task.datasets["train"]
    whole = _samples(task.get_batch_iterator(ds, max_sentences=8, seed=3).next_epoch_itr())
    itr = task.get_batch_iterator(ds, max_sentences=8, seed=3)
    first = _samples(itr.next_epoch_itr(), 7)
    state = itr.state_dict()
    assert state["iterations_in_epoch"] == 7
    resumed = task.get_batch_iterator(ds, max_sentences=8, seed=3)
    resumed.load_state_dict(state)
    rest = _samples(resumed.next_epoch_itr())
    assert len(first) + len(rest) == len(whole) == 36
    for (s1, i1, x1, y1), (s2, i2, x2, y2) in zip(first + rest, whole):
        assert (s1, i1) == (s2, i2) and torch.equal(x1, x2) and torch.equal(y1, y2)  # masks included


# ---------------------------------------------------------------- shards


@pytest.fixture(scope="module")
def sharded(bible_raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded")
    prepare.main(["--raw", str(bible_raw), "--destdir", str(out), "--langs", ",".join(BIBLE_LANGS),
                  "--vocab-size", str(BIBLE_VOCAB), "--sample-lines", "4000", "--shards", "3"])
    return out


def test_prepare_writes_shards_with_one_dictionary_and_resumes_per_shard(sharded, bible_raw, caplog):
    shards = [sharded / f"shard{i}" for i in range(3)]
    dicts = {(s / "dict.txt").read_bytes() for s in shards}
    assert len(dicts) == 1 and all((s / "spm.model").read_bytes() == (sharded / "spm.model").read_bytes()
                                   for s in shards)
    for name, total in (("train.en", BIBLE_MONO["train"]), ("train.en-es.es", BIBLE_PARA["train"])):
        counts = [len(SentenceDataset(str(s / name))) for s in shards]
        assert sum(counts) == total and max(counts) - min(counts) <= 1
    # contiguous slices: the shards' sentences, in order, are the whole training text, encoded as prepare does
    import sentencepiece as spm

    d = Dictionary.load(str(shards[0] / "dict.txt"))
    sp = spm.SentencePieceProcessor(model_file=str(sharded / "spm.model"))
    raw = (bible_raw / "train.en").read_text(encoding="utf-8").splitlines()
    want = [[d.index(sp.id_to_piece(i)) for i in sp.encode(line)] + [d.eos()] for line in raw]
    got = [ds[i].tolist() for s in shards for ds in [SentenceDataset(str(s / "train.en"))] for i in range(len(ds))]
    assert got == want
    assert (shards[0] / "valid.en.bin").is_file() and not (shards[1] / "valid.en.bin").exists()
    assert (shards[2] / "train.en.label").is_file()
    # a rerun skips every shard; a lost shard is redone alone
    shutil.rmtree(shards[1])
    with caplog.at_level(logging.INFO, logger="fairseq_xlm.cli.prepare"):
        prepare.main(["--raw", str(bible_raw), "--destdir", str(sharded), "--langs", ",".join(BIBLE_LANGS),
                      "--vocab-size", str(BIBLE_VOCAB), "--sample-lines", "4000", "--shards", "3"])
    ran = [r.getMessage().split()[1].rstrip(":") for r in caplog.records if r.getMessage().endswith("running")]
    # the redone shard gets its manifest again (each shard folder has one, checked when a task loads it)
    assert ran == ["binarize-shard1", "manifest"] and (shards[1] / "train.en.bin").is_file()
    assert all((s / "manifest.json").is_file() for s in shards)


def test_shards_rotate_per_epoch_and_validation_reads_the_first(sharded, tmp_path):
    paths = os.pathsep.join(str(sharded / f"shard{i}") for i in range(3))
    task = pretrain_task(paths)
    seen = []
    for epoch in range(1, 6):
        task.load_dataset("train", epoch=epoch)
        base = task.datasets["train"].steps["mlm_en"].dataset.dataset.stream.prefix
        seen.append(os.path.basename(os.path.dirname(base)))
    assert seen == ["shard0", "shard1", "shard2", "shard0", "shard1"]
    task.load_dataset("valid", epoch=2)
    assert "shard0" in task.datasets["valid"].steps["mlm_en"].dataset.dataset.stream.prefix
    assert task.has_sharded_data("train")
    # a shard with another dictionary is refused, naming both files
    bad = tmp_path / "bad"
    shutil.copytree(sharded / "shard1", bad)
    with open(bad / "dict.txt", "a", encoding="utf-8") as f:
        f.write("zzz 1\n")
    with pytest.raises(ValueError, match=r"bad/dict.txt differs from .*shard0/dict.txt"):
        pretrain_task(f"{sharded / 'shard0'}{os.pathsep}{bad}").load_dataset("train", epoch=2)
    with pytest.raises(ValueError, match="has an empty shard"):
        layout.shard_dirs(f"{sharded / 'shard0'}{os.pathsep}")


def test_fairseq_train_reads_one_shard_per_epoch(sharded, pkg_dir, run_fairseq, tmp_path):
    paths = os.pathsep.join(str(sharded / f"shard{i}") for i in range(3))
    out = run_fairseq("fairseq_cli.train", [
        paths, "--user-dir", pkg_dir, "--task", "xlm_pretrain", "--arch", "xlm_tiny", "--criterion", "xlm_lm",
        "--langs", "en,es", "--mlm-steps", "en,es,en-es", "--tokens-per-sample", "64", "--batch-size", "8",
        "--optimizer", "adam", "--lr", "1e-4", "--cpu", "--num-workers", "0", "--epoch-iterations", "1",
        "--max-epoch", "4", "--save-dir", tmp_path / "ckpt", "--no-save", "--disable-validation",
        "--log-format", "simple", "--seed", "1"]).stdout
    read = re.findall(r"train: epoch (\d+) reads .*(shard\d)", out)
    # fairseq also loads the next epoch's shard after the last epoch, before it stops
    assert read[:4] == [("1", "shard0"), ("2", "shard1"), ("3", "shard2"), ("4", "shard0")]
    assert all(shard == f"shard{(int(epoch) - 1) % 3}" for epoch, shard in read)
    assert re.findall(r"num_updates (\d+)", out)[-1] == "12"  # 4 epochs of 1 iteration = 3 steps each


def test_unsupervised_mt_trains_on_the_epochs_shard(sharded):
    from fairseq_xlm.tasks.unsupervised_mt import UnsupervisedMtConfig, UnsupervisedMtTask

    paths = os.pathsep.join(str(sharded / f"shard{i}") for i in range(3))
    task = UnsupervisedMtTask.setup_task(UnsupervisedMtConfig(data=paths, langs="en,es", ae_steps="en,es",
                                                              mt_steps="en-es", seed=1))
    for epoch, shard in ((1, "shard0"), (2, "shard1"), (4, "shard0")):
        task.load_dataset("train", epoch=epoch)
        assert os.path.basename(task.train_dir) == shard
        ae = task.datasets["train"].steps["ae:en"]
        assert len(ae) == len(SentenceDataset(str(sharded / shard / "train.en")))
    assert os.path.basename(os.path.dirname(task._mono_prefix("valid", "en"))) == "shard0"
