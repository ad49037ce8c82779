"""Fault injection: fairseq-train killed during checkpoint saves, torn and missing checkpoints, a data-bin
whose files are truncated, corrupted or mismatched, prepare killed mid-stage, a frozen distributed rank.

Fast by default (a few kills, a rank frozen after its first update); ``FAIRSEQ_XLM_SOAK=N`` kills training
N times instead (e.g. 20) and freezes the rank after 3 updates.
"""

import io
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest
import torch
from conftest import BIBLE_LANGS, BIBLE_VOCAB, commands_pythonpath

import fairseq_xlm  # noqa: F401  (the allow-list, the checkpoint patches)
from fairseq_xlm import checkpoint_files, errors
from fairseq_xlm.safe_load import CheckpointLoadError

REPO = Path(__file__).resolve().parents[1]
SOAK = int(os.environ.get("FAIRSEQ_XLM_SOAK", "0"))
MAX_UPDATE = 8


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=commands_pythonpath())


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


def kill_inside_save(cmd, save: Path, log: Path, target: str) -> Optional[str]:
    """Start training and SIGKILL it inside a checkpoint save, for certain: as soon as a temporary whose name
    matches ``target`` appears (fairseq's write of checkpoint_1_N.pt.tmp, or our copy to checkpoint_last.pt.tmp /
    checkpoint_best.pt.tmp), the process is frozen (SIGSTOP, waited for); if the temporary is still there, it is
    frozen inside that save and is killed, else (the save ended in between) it goes on to the next one.
    Returns the temporary's name (it is left behind, stale), or None if training finished first."""
    pattern = re.compile(target)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    try:
        while proc.poll() is None and time.time() < deadline:
            names = [n for n in (os.listdir(save) if save.is_dir() else ()) if pattern.fullmatch(n)]
            if names:
                proc.send_signal(signal.SIGSTOP)
                _, status = os.waitpid(proc.pid, os.WUNTRACED)
                if not os.WIFSTOPPED(status):  # it ended before the stop
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    return None
                if (save / names[0]).exists():
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    assert (save / names[0]).exists()
                    return names[0]
                proc.send_signal(signal.SIGCONT)
            time.sleep(0.0002)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    if proc.returncode != 0 or time.time() >= deadline:
        pytest.fail(f"training failed or hung before a save matching {target}:\n{log.read_text()[-2000:]}")
    return None


# Where the kills land, one per restart: inside fairseq's write of a numbered checkpoint, inside our copy of
# it to checkpoint_last.pt (the copy to checkpoint_best.pt is the same atomic_copy: FAIRSEQ_XLM_SOAK draws
# from all three at random).
KILL_TARGETS = (r"checkpoint_1_[2-9]\.pt\.tmp", r"checkpoint_last\.pt\.tmp", r"checkpoint_best\.pt\.tmp")


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
    """Every kill lands inside a save (fairseq's write, our copy to checkpoint_last.pt); every
    checkpoint name left loads in full, each restart removes the stale temporary and resumes from the newest
    save or the one before, and the finished run equals an uninterrupted one bit for bit (dropout on: weights,
    Adam moments, logged losses). Then a real torn checkpoint_last.pt: the start resumes from the newest
    readable checkpoint and removes a stale temporary."""
    ref = tmp_path / "ref"
    ref_log = run(train_cmd(bible_databin, ref, pkg_dir)).stdout
    save, rng = tmp_path / "killed", random.Random(13)
    newest, logs, killed = 0, [], None
    targets = [rng.choice(KILL_TARGETS) for _ in range(SOAK)] if SOAK else KILL_TARGETS[:2]
    for i, target in enumerate(targets):
        logs.append(tmp_path / f"kill{i}.log")
        killed_in = kill_inside_save(train_cmd(bible_databin, save, pkg_dir), save, logs[-1], target)
        if killed_in is None:  # a soak's draw: the restart had no such save left to do
            assert SOAK, f"training ended without a save matching {target}"
        if i and killed:
            assert "removed 1 stale temporary" in logs[-1].read_text()  # the previous kill's
            assert loaded_updates(logs[-1].read_text()) >= newest - 1  # at most one save interval lost
        killed = killed_in
        newest = saved_updates(save)  # torch.load raises if any checkpoint_1_N.pt is torn
        for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
            if (save / name).exists():
                torch.load(save / name, weights_only=True)
    finished = run(train_cmd(bible_databin, save, pkg_dir)).stdout
    assert "removed 1 stale temporary" in finished or not killed
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


def marker_first_run(self, name, params, fn):
    """A broken Stages.run that writes a stage's marker before doing the stage (the bug that prepare's
    marker-after-outputs order prevents): a kill inside the stage leaves a marker claiming it done."""
    import hashlib
    import json

    fingerprint = hashlib.sha1(json.dumps([self.chain, name, params], sort_keys=True).encode()).hexdigest()
    self.chain, marker = fingerprint, os.path.join(self.work, f"{name}.done")
    if os.path.isfile(marker):
        with open(marker) as f:
            done = json.load(f)
        if done["fingerprint"] == fingerprint and all(os.path.exists(os.path.join(self.cfg.destdir, p))
                                                      for p in done["result"].get("outputs", [])):
            return done["result"]
    for result in ({}, None):
        if result is None:
            result = fn()
        with open(marker, "w") as f:
            json.dump({"fingerprint": fingerprint, "result": result}, f)
    return result


def kill_prepare_inside(args, stage: str, mutation=None) -> dict:
    """Run prepare (``args``) in a forked child (fairseq already imported: no interpreter start) until it
    pauses inside ``stage`` -- at the stage's first rename of a finished file into place (an output, or for
    a stage without outputs its marker) -- and SIGKILL it there. Returns {"stage", "dst"} of that rename.
    ``mutation``: a replacement for Stages.run in the child (the test must fail on it)."""
    import json
    import select

    from fairseq_xlm.cli import prepare

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read)
            real_replace, real_run, current = os.replace, mutation or prepare.Stages.run, []

            def replace(src, dst):
                if current and current[-1] == stage:
                    os.write(write, json.dumps({"stage": stage, "dst": os.path.basename(dst)}).encode())
                    while True:
                        time.sleep(60)
                return real_replace(src, dst)

            def run_stage(self, name, params, fn):
                current.append(name)
                try:
                    return real_run(self, name, params, fn)
                finally:
                    current.pop()

            os.replace, prepare.Stages.run = replace, run_stage
            prepare.main(args)
        finally:
            os._exit(1)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], 240)
        paused = os.read(read, 4096) if ready else b""
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read)
    assert paused, f"prepare never paused in stage {stage}"
    return json.loads(paused)


def prepare_args(raw, dest):
    return ["--raw", str(raw), "--destdir", str(dest), "--langs", ",".join(BIBLE_LANGS), "--vocab-size",
            str(BIBLE_VOCAB), "--sample-lines", "4000"]


def assert_same_files(dest: Path, clean: Path):
    made = sorted(p.name for p in dest.iterdir() if p.is_file())
    assert made == sorted(p.name for p in clean.iterdir() if p.is_file())
    for name in made:
        assert (dest / name).read_bytes() == (clean / name).read_bytes(), name


def test_prepare_killed_inside_every_stage_reruns_to_identical_bytes(bible_raw, tmp_path):
    """prepare is SIGKILLed inside each of its stages in turn (each restart skips the stages done and is
    killed in the next one, before its marker), then run to the end: the killed runs' temporaries are removed
    and every file equals a build made in one go into the same folder (sentencepiece records its paths in spm.model) with the same settings. The same
    kill against a Stages.run that writes a stage's marker first ends in a failed or different build."""
    from fairseq_xlm.cli import prepare

    dest, clean = tmp_path / "db", tmp_path / "clean"
    args = prepare_args(bible_raw, dest)
    prepare.main(args)
    dest.rename(clean)
    for stage in prepare.STAGES:
        where = kill_prepare_inside(args, stage)
        assert where["stage"] == stage and not (dest / "prep" / f"{stage}.done").exists(), where
        assert all((dest / "prep" / f"{done}.done").is_file() for done in prepare.STAGES[:prepare.STAGES.index(stage)])
    stale = [p.name for p in dest.rglob("*.tmp[0-9]*")]
    assert stale  # the kills interrupted writes: their temporaries, complete but never renamed, are left
    prepare.main(args)
    assert not list(dest.rglob("*.tmp[0-9]*"))  # removed by the rerun
    assert_same_files(dest, clean)

    shutil.rmtree(dest)  # the broken implementation, in the same folder (spm.model records its paths)
    kill_prepare_inside(args, "sample", mutation=marker_first_run)
    try:
        prepare.main(args)
        assert_same_files(dest, clean)
    except (AssertionError, SystemExit, Exception) as e:
        failed = e
    else:
        failed = None
    assert failed is not None, "the marker-first Stages.run passed"


# ---------------------------------------------------------------- a frozen rank


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_frozen_rank_fails_its_peer_within_the_timeout(bible_databin, pkg_dir, tmp_path):
    """Rank 1 is SIGSTOPped after an update (3 with FAIRSEQ_XLM_SOAK); rank 0 must exit non-zero within the
    process-group timeout (FAIRSEQ_XLM_DIST_TIMEOUT=5 s, plus slack) with one line naming rank 1."""
    init, timeout, frozen_at = f"tcp://127.0.0.1:{free_port()}", 5, 3 if SOAK else 1
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
        deadline = time.time() + 300  # two fairseq start-ups: seconds on 2 idle cores, minutes on a loaded machine
        while f"num_updates={frozen_at}," not in logs[0].read_text() and time.time() < deadline:
            assert procs[0].poll() is None, logs[0].read_text()[-2000:]
            time.sleep(0.05)
        # frozen in training, not at start-up
        assert f"num_updates={frozen_at}," in logs[0].read_text(), [log.read_text()[-1500:] for log in logs]
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
