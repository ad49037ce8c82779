"""A full disk (issue 28, item 8): one line naming the file and the free space, for checkpoint saves and for
prepare (sentencepiece's failed write too, which blamed --vocab-size), and a restart that resumes from the
newest complete checkpoint when the disk filled up before checkpoint_last.pt was written. ENOSPC is injected
(a tmpfs needs root); docs/failures.md gives the same runs on a real 6 MB filesystem."""

import errno
import logging
import os
import shutil
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

import fairseq_xlm  # noqa: F401  (the checkpoint patches)
from fairseq import checkpoint_utils
from fairseq_xlm import checkpoint_files, errors
from fairseq_xlm.cli import prepare, prepare_stages

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def _full_after(n_bytes):
    """A torch save that writes ``n_bytes`` and then finds the disk full."""
    def save(obj, f):
        f.write(b"\0" * n_bytes)
        raise ENOSPC
    return save


def test_a_save_on_a_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint_1_10.pt"
    monkeypatch.setattr(checkpoint_utils, "_torch_persistent_save", _full_after(1000))
    with pytest.raises(errors.DiskFullError) as info:
        checkpoint_files.atomic_torch_save({"x": 1}, str(target))
    line = errors.one_line(type(info.value), info.value)
    assert line.startswith(f"no space left on the device writing {target} ({tmp_path}: ")
    assert " free); " in line and "resumes from the newest complete checkpoint" in line
    assert os.listdir(tmp_path) == []  # no checkpoint_1_10.pt, no .tmp

    # the copy to checkpoint_last.pt (fairseq's PathManager.copy): the same line; the source stays
    source = tmp_path / "checkpoint_1_5.pt"
    torch.save({"x": 1}, source)

    def copy_fails(src, dst):
        with open(dst, "wb") as f:
            f.write(b"\0" * 10)
        raise ENOSPC
    monkeypatch.setattr(checkpoint_files.shutil, "copyfile", copy_fails)
    with pytest.raises(errors.DiskFullError, match="writing .*checkpoint_last.pt"):
        checkpoint_files.AtomicPathManager.copy(str(source), str(tmp_path / "checkpoint_last.pt"), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_1_5.pt"]


def test_a_library_write_failure_is_a_full_disk_only_when_the_disk_is_full(tmp_path, monkeypatch):
    """torch's writer says "file write failed", not ENOSPC: the free space decides."""
    failed = RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file")
    path = str(tmp_path / "checkpoint_last.pt")
    assert not errors.is_disk_full(failed, path)  # a real disk with space: another problem, keep the traceback
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(errors.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    assert errors.is_disk_full(failed, path) and errors.free_space(path) == "1.0 kB free"


def test_restart_without_checkpoint_last_resumes_from_the_newest_complete_one(tmp_path, caplog):
    """The disk filled up after checkpoint_1_5.pt, before checkpoint_last.pt: fairseq started from update 0."""
    torch.save({"updates": 5}, tmp_path / "checkpoint_1_5.pt")
    torn = tmp_path / "checkpoint_1_10.pt"  # newer, but cut short
    torch.save({"updates": 10}, torn)
    torn.write_bytes(torn.read_bytes()[:-40])
    seen = []
    load = checkpoint_files._guarded_load(lambda cfg, trainer: seen.append(cfg.restore_file))
    cfg = OmegaConf.create({"restore_file": "checkpoint_last.pt", "save_dir": str(tmp_path),
                            "finetune_from_model": None})
    with caplog.at_level(logging.WARNING, logger="fairseq_xlm.checkpoint_files"):
        load(cfg, SimpleNamespace(checkpoint_suffix=""))
    assert seen == [str(tmp_path / "checkpoint_1_5.pt")]
    assert f"no {tmp_path}/checkpoint_last.pt: resuming from {tmp_path}/checkpoint_1_5.pt" in caplog.text
    assert cfg.restore_file == "checkpoint_last.pt"  # for this start only

    empty = tmp_path / "fresh"
    empty.mkdir()
    cfg.save_dir = str(empty)
    load(cfg, SimpleNamespace(checkpoint_suffix=""))
    assert seen[-1] == "checkpoint_last.pt"  # nothing to resume from: fairseq starts from scratch


@pytest.mark.parametrize("where", ["sentencepiece", "binarize"])
def test_prepare_on_a_full_disk_names_the_disk(bible_raw, tmp_path, monkeypatch, where):
    dest = tmp_path / "db"
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(errors.shutil, "disk_usage", lambda p: usage._replace(free=2000))
    if where == "sentencepiece":
        def train(**kwargs):  # what sentencepiece raises when it cannot write its model
            raise RuntimeError("Internal: src/trainer_interface.cc(662) [ok] Failed to write the model")
        monkeypatch.setattr(prepare_stages.spm.SentencePieceTrainer, "train", train)
    else:
        def binarize(*args, **kwargs):
            raise ENOSPC
        monkeypatch.setattr(prepare.prepare_ids, "binarize", binarize)
    with pytest.raises(SystemExit) as info:
        prepare.main(["--raw", str(bible_raw), "--destdir", str(dest), "--langs", "en,es", "--vocab-size", "300",
                      "--sample-lines", "500"])
    message = str(info.value.code)
    assert message.startswith("error: no space left on the device writing ") and "2.0 kB free" in message
    assert "--vocab-size" not in message and str(dest) in message
