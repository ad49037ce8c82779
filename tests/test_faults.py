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
from conftest import BIBLE_LANGS, BIBLE_VOCAB

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
    """Start training and SIGKILL it at one of three moments, drawn at random: as soon as a checkpoint
    temporary appears (a write or one of our copies under way), as soon as a new checkpoint_1_N.pt appears
    (fairseq then copies it to checkpoint_best/last.pt), or at a random time after the first save."""
    numbered = re.compile(r"checkpoint_\d+_\d+\.pt$")
    before = set(os.listdir(save)) if save.is_dir() else set()
    when, delay = rng.choice(["tmp", "new", "random"]), rng.uniform(0, 0.4)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    try:
        while proc.poll() is None and time.time() < deadline:
            names = set(os.listdir(save)) if save.is_dir() else set()
            if when == "tmp" and any(n.endswith(".tmp") for n in names):
                break
            if when == "new" and any(numbered.match(n) for n in names - before):
                break
            if when == "random" and any(n.endswith(".pt") for n in names):
                time.sleep(delay)
                break
            time.sleep(0.0002)
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


# ---------------------------------------------------------------- data-bin integrity


def pretrain_task(data):
    from fairseq_xlm.tasks.xlm_pretrain import XlmPretrainConfig, XlmPretrainTask

    return XlmPretrainTask.setup_task(XlmPretrainConfig(data=str(data), langs="en,es", mlm_steps="en,es,en-es",
                                                        seed=1))


@pytest.fixture
def databin(bible_databin, tmp_path):
    """A fresh copy of the session's data-bin (with its manifest.json) to damage."""
    import shutil

    out = tmp_path / "db"
    shutil.copytree(bible_databin, out, ignore=shutil.ignore_patterns("prep"))
    return out


def _truncate(path: Path, n: int = 10):
    path.write_bytes(path.read_bytes()[:-n])


def _flip(path: Path, offset: int):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, manifest, message", [
    (lambda d: _truncate(d / "train.en.bin"), True, r"train\.en\.bin: \d+ bytes, but manifest\.json says \d+"),
    (lambda d: _truncate(d / "train.en.bin"), False, r"train\.en\.bin: \d+ bytes, but \S+train\.en\.idx indexes"),
    (lambda d: _truncate(d / "train.en.idx"), True, r"train\.en\.idx: \d+ bytes, but manifest\.json says"),
    (lambda d: _truncate(d / "train.en.idx"), False, r"train\.en\.idx: \d+ bytes, but its header says 600 sent"),
    # with a manifest, a byte changed in place (same size) is verify's to find (test_verify_finds_...): the
    # load-time check reads only headers and sizes, so that start-up does not read every index (issue 14)
    (lambda d: _flip(d / "train.en.idx", 26 + 4 * 7), False, r"train\.en\.idx: corrupted \(sentence sizes and off"),
    (lambda d: _flip(d / "train.en.idx", 2), True, r"train\.en\.idx: not a fairseq mmap index"),
    (lambda d: (d / "dict.txt").write_text("".join((d / "dict.txt").read_text().splitlines(True)[:100])), False,
     r"train\.\S+\.bin: token id \d+ is outside the dictionary \S+dict\.txt \(105 symbols\)"),
], ids=["bin-cut", "bin-cut-nomanifest", "idx-cut", "idx-cut-nomanifest", "idx-flipped-nomanifest", "idx-magic",
        "small-dict-nomanifest"])
def test_damaged_data_bin_is_named_at_load(databin, damage, manifest, message):
    from fairseq_xlm.errors import DataBinError

    damage(databin)
    if not manifest:
        (databin / "manifest.json").unlink()
    with pytest.raises(DataBinError, match=message):
        pretrain_task(databin).load_dataset("train")


def test_dictionary_of_another_data_bin_is_refused_by_every_task(databin, bible_ny_databin, tmp_path):
    from fairseq_xlm.cli import prepare_xnli
    from fairseq_xlm.errors import DataBinError
    from fairseq_xlm.tasks.unsupervised_mt import UnsupervisedMtConfig, UnsupervisedMtTask
    from fairseq_xlm.tasks.xnli import XlmXnliConfig, XlmXnliTask
    from omegaconf import OmegaConf

    fixtures = Path(__file__).parent / "fixtures" / "xnli"
    prepare_xnli.main(["extract", "--out", str(tmp_path / "raw"), "--langs", "en,es", "--xnli-dir", str(fixtures),
                       "--mnli-train", str(fixtures / "multinli_1.0_train.jsonl")])
    prepare_xnli.main(["binarize", "--raw", str(tmp_path / "raw"), "--data", str(databin)])
    assert (databin / "xnli" / "manifest.json").is_file()
    xnli = XlmXnliTask.setup_task(OmegaConf.structured(XlmXnliConfig(data=str(databin), langs="en,es")))
    umt_cfg = UnsupervisedMtConfig(data=str(databin), langs="en,es", ae_steps="en,es", mt_steps="en-es")
    umt_cfg.seed = 1
    umt = UnsupervisedMtTask.setup_task(umt_cfg)
    for task in (xnli, umt, pretrain_task(databin)):
        task.load_dataset("valid")  # the data-bin as prepared loads
    (databin / "dict.txt").write_bytes((bible_ny_databin / "dict.txt").read_bytes())
    for task in (xnli, umt, pretrain_task(databin)):
        with pytest.raises(DataBinError, match=r"dict\.txt: not the dictionary \S+manifest\.json was binarized"):
            task.load_dataset("valid")


def test_parallel_sides_of_different_length_are_named(databin):
    from fairseq_xlm.errors import DataBinError

    for ext in ("bin", "idx"):  # a side of another split: 60 lines against 300
        (databin / f"train.en-es.es.{ext}").write_bytes((databin / f"valid.en-es.es.{ext}").read_bytes())
    (databin / "manifest.json").unlink()
    with pytest.raises(DataBinError, match=r"train\.en-es\.es\.bin: 60 sentences, but the other side \S+"
                                           r"train\.en-es\.en\.bin has 300"):
        pretrain_task(databin).load_dataset("train")


def test_plain_fairseq_data_bin_loads_with_a_note(databin, caplog):
    import json
    import logging

    caplog.set_level(logging.INFO, logger="fairseq_xlm.data.manifest")
    manifest = json.loads((databin / "manifest.json").read_text())
    del manifest["files"]["valid.en.bin"]  # a split added after prepare: loads, its ids read and checked
    (databin / "manifest.json").write_text(json.dumps(manifest))
    pretrain_task(databin).load_dataset("valid")
    assert "valid.en.bin/.idx: not listed in" in caplog.text
    (databin / "manifest.json").unlink()
    pretrain_task(databin).load_dataset("valid")
    assert "no manifest.json (a data-bin not made by fairseq_xlm.cli.prepare)" in caplog.text


def test_verify_finds_a_file_corrupted_in_place(databin, capsys):
    from fairseq_xlm.cli import verify

    assert verify.main([str(databin)]) == 0
    assert re.search(r"ok: \d+ files of 1 manifest", capsys.readouterr().out)
    _flip(databin / "train.es.bin", 100)  # same size: the load-time check cannot see it, verify does
    pretrain_task(databin).load_dataset("train")
    assert verify.main([str(databin)]) == 1
    assert f"error: {databin / 'train.es.bin'}: sha256 differs" in capsys.readouterr().out


def test_verify_writes_the_manifest_of_a_plain_data_bin(databin, capsys):
    """--write-manifest on a data-bin without one checks it and records what prepare would have."""
    import json

    from fairseq_xlm.cli import verify

    written_by_prepare = json.loads((databin / "manifest.json").read_text())
    (databin / "manifest.json").unlink()
    assert verify.main([str(databin), "--write-manifest"]) == 0
    ours = json.loads((databin / "manifest.json").read_text())
    for key in ("files", "dictionary", "spm_model", "langs", "pairs"):
        assert ours[key] == written_by_prepare[key], key
    with pytest.raises(SystemExit, match="exists already"):
        verify.main([str(databin), "--write-manifest"])
    (databin / "manifest.json").unlink()
    _flip(databin / "train.es.bin", 1)  # the high byte of a uint16 id: outside the dictionary
    with pytest.raises(SystemExit, match=r"train\.es\.bin: token id \d+ is outside the dictionary"):
        verify.main([str(databin), "--write-manifest"])
    assert not (databin / "manifest.json").exists()


# ---------------------------------------------------------------- prepare killed mid-stage


def test_prepare_killed_mid_stage_reruns_to_identical_bytes(bible_raw, tmp_path):
    """prepare is SIGKILLed at a random moment, then run to the end: every file equals a build made in one
    go into the same folder (sentencepiece records its paths in spm.model) with the same settings."""
    dest, clean, rng = tmp_path / "db", tmp_path / "clean", random.Random(5)
    cmd = [sys.executable, "-m", "fairseq_xlm.cli.prepare", "--raw", str(bible_raw), "--destdir", str(dest),
           "--langs", ",".join(BIBLE_LANGS), "--vocab-size", str(BIBLE_VOCAB), "--sample-lines", "4000"]
    run(cmd)
    dest.rename(clean)
    for _ in range(max(1, SOAK // 4)):
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and not (dest / "prep").is_dir():
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run(cmd)
    made = sorted(p.name for p in dest.iterdir() if p.is_file())
    assert made == sorted(p.name for p in clean.iterdir() if p.is_file())
    for name in made:
        assert (dest / name).read_bytes() == (clean / name).read_bytes(), name


# ---------------------------------------------------------------- a frozen rank


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not SOAK, reason="two gloo ranks for ~20 s: set FAIRSEQ_XLM_SOAK=N")
def test_frozen_rank_fails_its_peer_within_the_timeout(bible_databin, pkg_dir, tmp_path):
    """Rank 1 is SIGSTOPped after 3 updates; rank 0 must exit non-zero within the process-group timeout
    (FAIRSEQ_XLM_DIST_TIMEOUT=5 s, plus start-up slack) with one line naming rank 1."""
    init, timeout = f"tcp://127.0.0.1:{free_port()}", 5
    env = dict(_env(), FAIRSEQ_XLM_DIST_TIMEOUT=str(timeout))
    procs, logs = [], [tmp_path / f"rank{r}.log" for r in (0, 1)]
    for rank in (0, 1):
        cmd = train_cmd(bible_databin, tmp_path / "ck", pkg_dir, "--no-save", "--disable-validation",
                        "--max-update", "100000", "--distributed-world-size", "2", "--distributed-rank", rank,
                        "--distributed-init-method", init, "--distributed-backend", "gloo",
                        "--ddp-backend", "legacy_ddp", "--distributed-no-spawn")
        with open(logs[rank], "w") as out:
            procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT))
    try:
        deadline = time.time() + 120
        while "num_updates=3," not in logs[0].read_text() and time.time() < deadline:
            assert procs[0].poll() is None, logs[0].read_text()[-2000:]
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGSTOP)
        stopped = time.time()
        procs[0].wait(timeout=timeout + 60)
        waited = time.time() - stopped
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    text = logs[0].read_text()
    assert procs[0].returncode != 0 and waited < timeout + 30, (waited, text[-2000:])
    assert re.search(r"error: rank 0 of 2: rank 1 stopped answering .*FAIRSEQ_XLM_DIST_TIMEOUT=5 s", text)
    assert "Traceback" not in text


def test_dist_timeout_sets_the_process_group_default(monkeypatch):
    from datetime import timedelta

    from torch.distributed import distributed_c10d

    from fairseq_xlm import dist_timeout

    monkeypatch.setattr(distributed_c10d, "default_pg_timeout", distributed_c10d.default_pg_timeout)
    monkeypatch.setenv(dist_timeout.ENV, "42")
    dist_timeout.install()
    assert distributed_c10d._get_default_timeout("gloo") == timedelta(seconds=42)
    monkeypatch.setenv(dist_timeout.ENV, "ten")
    with pytest.raises(ValueError, match="FAIRSEQ_XLM_DIST_TIMEOUT='ten': give the process-group timeout"):
        dist_timeout.install()
    assert dist_timeout.explain(RuntimeError("Timed out waiting 1ms")) is None  # no process group: not ours


def test_recipes_pass_the_timeouts(tmp_path):
    """recipes/lib/timeouts.sh: 600 s each by default, 0 turns one off, bad values exit 2."""
    lib = REPO / "recipes" / "lib" / "timeouts.sh"
    show = f'source "{lib}"; echo "${{FAIRSEQ_XLM_DIST_TIMEOUT:-unset}} ${{TIMEOUT_FLAGS[*]}}"'

    def sh(**env):
        base = {k: v for k, v in os.environ.items() if k not in ("DIST_TIMEOUT", "HEARTBEAT_TIMEOUT",
                                                                  "FAIRSEQ_XLM_DIST_TIMEOUT")}
        return subprocess.run(["bash", "-c", show], env=dict(base, **env), capture_output=True, text=True)

    assert sh().stdout.strip() == "600 --heartbeat-timeout 600"
    assert sh(DIST_TIMEOUT="0", HEARTBEAT_TIMEOUT="0").stdout.strip() == "unset --heartbeat-timeout -1"
    assert sh(DIST_TIMEOUT="5m").returncode == 2
