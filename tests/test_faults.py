"""Fault injection: fairseq-train killed during checkpoint saves, torn and missing checkpoints, a data-bin
whose files are truncated, corrupted or mismatched, prepare killed mid-stage, a frozen distributed rank.

Fast by default (a few kills); ``FAIRSEQ_XLM_SOAK=N`` kills training N times instead (e.g. 20) and also
runs the frozen-rank test.
"""

import io
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import fairseq_xlm  # noqa: F401  (the allow-list, the checkpoint patches)
from fairseq_xlm import checkpoint_files, errors
from fairseq_xlm.safe_load import CheckpointLoadError

REPO = Path(__file__).resolve().parents[1]
SOAK = int(os.environ.get("FAIRSEQ_XLM_SOAK", "0"))
MAX_UPDATE = 8


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def train_cmd(data, save, pkg_dir, *extra):
    """Tiny MLM+TLM pretraining with dropout, a save after every update and validation every 3."""
    args = [data, "--user-dir", pkg_dir, "--task", "xlm_pretrain", "--arch", "xlm_tiny", "--criterion", "xlm_lm",
            "--langs", "en,es", "--mlm-steps", "en,es,en-es", "--optimizer", "adam", "--lr", "1e-3",
            "--batch-size", "4", "--tokens-per-sample", "64", "--cpu", "--num-workers", "0", "--log-interval", "1",
            "--save-dir", save, "--seed", "3", "--dropout", "0.1", "--attention-dropout", "0.1",
            "--max-update", MAX_UPDATE, "--save-interval-updates", "1", "--validate-interval-updates", "3",
            "--best-checkpoint-metric", "avg_ppl", *extra]
    return [sys.executable, "-m", "fairseq_cli.train", *map(str, args)]


def run(cmd, check=True):
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        pytest.fail(f"exit {proc.returncode}: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def loaded_updates(log: str):
    """The update count fairseq restored from, or None for a fresh start."""
    found = re.findall(r"Loaded checkpoint \S+ \(epoch \d+ @ (\d+) updates\)", log)
    return int(found[-1]) if found else None


def train_losses(log: str):
    """(update, loss) of every train_inner line."""
    return [(int(n), loss) for loss, n in re.findall(r"train_inner \|.*? loss=([0-9.]+),.*?num_updates=(\d+)", log)]


def saved_updates(save: Path) -> int:
    """Highest N of checkpoint_1_N.pt that torch itself loads in full (the independent oracle)."""
    best = 0
    for path in save.glob("checkpoint_*_*.pt"):
        torch.load(path, weights_only=True)
        best = max(best, int(path.stem.rsplit("_", 1)[1]))
    return best


def kill_during_save(cmd, save: Path, log: Path, rng: random.Random) -> None:
    """Start training and SIGKILL it: half the time the moment a checkpoint temporary appears (a write or a
    copy is under way), otherwise at a random time after the first save."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    on_tmp, delay = rng.random() < 0.5, rng.uniform(0, 0.4)
    deadline = time.time() + 120
    try:
        while proc.poll() is None and time.time() < deadline:
            names = os.listdir(save) if save.is_dir() else []
            if on_tmp and any(n.endswith(".tmp") for n in names):
                break
            if not on_tmp and any(n.endswith(".pt") for n in names):
                time.sleep(delay)
                break
            time.sleep(0.0005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def final_state(path: Path):
    state = torch.load(path, weights_only=True)
    return state["model"], state["last_optimizer_state"]["state"]


def assert_same_state(a, b):
    (model_a, adam_a), (model_b, adam_b) = a, b
    assert model_a.keys() == model_b.keys()
    for name in model_a:
        assert torch.equal(model_a[name], model_b[name]), name
    for key in adam_a:
        for field in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(adam_a[key][field], adam_b[key][field]), (key, field)


def test_kills_during_checkpoint_saves_always_resume_exactly(bible_databin, pkg_dir, tmp_path):
    """Every checkpoint name left by a kill loads in full, each restart resumes from the newest save or the
    one before, and the finished run equals an uninterrupted one bit for bit (dropout on: weights, Adam
    moments, logged losses). Then a real torn checkpoint_last.pt: the start resumes from the newest readable
    checkpoint and removes a stale temporary."""
    ref = tmp_path / "ref"
    ref_log = run(train_cmd(bible_databin, ref, pkg_dir)).stdout
    save, rng = tmp_path / "killed", random.Random(13)
    newest = 0
    for i in range(SOAK or 2):
        log = tmp_path / f"kill{i}.log"
        kill_during_save(train_cmd(bible_databin, save, pkg_dir), save, log, rng)
        if loaded_updates(log.read_text()) is not None:
            assert loaded_updates(log.read_text()) >= newest - 1  # at most one save interval lost
        newest = saved_updates(save)  # torch.load raises if any checkpoint_1_N.pt is torn
        for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
            if (save / name).exists():
                torch.load(save / name, weights_only=True)
    finished = run(train_cmd(bible_databin, save, pkg_dir)).stdout
    assert (loaded_updates(finished) or 0) >= newest - 1
    assert not list(save.glob("*.tmp"))
    assert_same_state(final_state(save / "checkpoint_last.pt"), final_state(ref / "checkpoint_last.pt"))
    assert set(train_losses(finished)) <= set(train_losses(ref_log))  # the losses logged after the resume too
    assert len(train_losses(finished)) == MAX_UPDATE - (loaded_updates(finished) or 0)
    # a torn file made for real: half of checkpoint_last.pt, and a stale temporary of a killed save
    data = (save / "checkpoint_last.pt").read_bytes()
    (save / "checkpoint_last.pt").write_bytes(data[: len(data) // 2])
    (save / "checkpoint_1_9.pt.tmp").write_bytes(data[:1000])
    resumed = run(train_cmd(bible_databin, save, pkg_dir)).stdout
    assert re.search(rf"{re.escape(str(save))}/checkpoint_last\.pt is not a complete checkpoint .*resuming from "
                     rf"{re.escape(str(save))}/checkpoint_(1_{MAX_UPDATE}|best)\.pt", resumed)
    assert "removed 1 stale temporary" in resumed and not (save / "checkpoint_1_9.pt.tmp").exists()
    assert loaded_updates(resumed) == MAX_UPDATE


def test_missing_restore_file_is_one_line_error(bible_databin, pkg_dir, tmp_path):
    proc = run(train_cmd(bible_databin, tmp_path / "ck", pkg_dir, "--restore-file", tmp_path / "typo.pt"),
               check=False)
    assert proc.returncode == 1
    assert f"error: --restore-file {tmp_path / 'typo.pt'}: no such file" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "ck" / "checkpoint_last.pt").exists()


def test_atomic_copy_keeps_the_old_file_when_the_copy_dies(tmp_path, monkeypatch):
    src, dst = tmp_path / "new.pt", tmp_path / "checkpoint_last.pt"
    torch.save({"v": 2}, src)
    torch.save({"v": 1}, dst)

    def dying_copy(a, b):
        with open(a, "rb") as f, open(b, "wb") as g:
            g.write(f.read(100))
        raise OSError("killed mid-copy")

    monkeypatch.setattr(checkpoint_files.shutil, "copyfile", dying_copy)
    with pytest.raises(OSError):
        checkpoint_files.AtomicPathManager.copy(str(src), str(dst), overwrite=True)
    assert torch.load(dst)["v"] == 1 and not list(tmp_path.glob("*.tmp"))
    monkeypatch.undo()
    assert checkpoint_files.AtomicPathManager.copy(str(src), str(dst), overwrite=True)
    assert torch.load(dst)["v"] == 2


def test_is_complete_tells_torn_files(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"w": torch.arange(1000.0)}, path)
    data = path.read_bytes()
    assert checkpoint_files.is_complete(str(path))
    for torn in (b"", data[:-1], data[: len(data) // 2]):
        path.write_bytes(torn)
        assert not checkpoint_files.is_complete(str(path))
    flipped = bytearray(data)
    flipped[data.index(b"\x00\x00\x80?") + 2] ^= 0xFF  # a byte of the tensor data: its CRC no longer matches
    path.write_bytes(bytes(flipped))
    assert not checkpoint_files.is_complete(str(path))


def test_user_errors_print_one_line(monkeypatch):
    seen = []
    hook = errors._hook(lambda *exc: seen.append(exc))
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    hook(CheckpointLoadError, CheckpointLoadError("x.pt: refused to load"), None)
    assert stderr.getvalue() == "error: x.pt: refused to load\n" and not seen
    hook(KeyError, KeyError("k"), None)
    assert len(seen) == 1  # other exceptions keep their traceback
