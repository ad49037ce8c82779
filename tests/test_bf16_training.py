"""bf16 mixed precision for users (--autocast-bf16: the forward under torch.autocast(bfloat16), fp32 weights,
gradients and Adam state): pretraining updates track the fp32 run's losses; the xnli task's steps run
their criterion under autocast. fairseq's own --bf16 implies --tpu and fails on a CPU machine (checked)."""

import importlib.util
import os
import re
import subprocess
from types import SimpleNamespace

import preload
import pytest
import torch
from conftest import commands_pythonpath

from fairseq_xlm.tasks.xnli import XlmXnliTask
from test_pretrain_e2e import logged, train_args

# The same 8 updates in fp32 and under bf16 autocast (dropout off, so both see identical batches and masks).
# bf16 keeps 8 bits of mantissa in the products, so per-update losses differ slightly; 2 % per update leaves
# room for that without letting a broken run (a loss that stops falling or jumps) pass.
LOSS_RTOL = 0.02


@pytest.mark.parametrize("steps", [["--mlm-steps", "en,es,en-es"], ["--clm-steps", "en,es"]], ids=["mlm_tlm", "clm"])
def test_bf16_autocast_pretraining_tracks_fp32_losses(bible_databin, pkg_dir, run_fairseq, tmp_path, steps):
    common = [*steps, "--max-update", "8", "--disable-validation", "--dropout", "0", "--attention-dropout", "0",
              "--no-save"]
    runs = {}
    for name, extra in (("fp32", []), ("bf16", ["--autocast-bf16"])):
        out = run_fairseq("fairseq_cli.train",
                          train_args(bible_databin, tmp_path / name, pkg_dir, *common, *extra)).stdout
        runs[name] = logged(out, "loss")[:8]
    assert len(runs["fp32"]) == len(runs["bf16"]) == 8
    assert runs["bf16"] == pytest.approx(runs["fp32"], rel=LOSS_RTOL)
    assert runs["bf16"] != runs["fp32"]  # bf16 did run
    assert runs["bf16"][-1] < runs["bf16"][0]  # and it trains


# How a --tpu run ends without torch_xla: fairseq imports it under try/except (xm = None), then its trainer
# asks utils.get_tpu_device() for xm.xla_device().
NO_XLA = "AttributeError: 'NoneType' object has no attribute 'xla_device'"


def fails_for_want_of_xla(proc: subprocess.CompletedProcess) -> bool:
    """The run exited non-zero, its last error is fairseq's missing torch_xla, raised in get_tpu_device (not
    any failure whose output mentions xla)."""
    lines = proc.stderr.splitlines()
    errors = [i for i, line in enumerate(lines) if re.match(r"^\w+(Error|Exception)\b", line)]
    return (proc.returncode != 0 and bool(errors) and lines[errors[-1]] == NO_XLA
            and ", in get_tpu_device" in "\n".join(lines[max(0, errors[-1] - 4):errors[-1]]))


def test_fairseq_bf16_flag_does_not_run_on_a_cpu_machine(bible_databin, pkg_dir, tmp_path):
    """Why --autocast-bf16 exists: fairseq's --bf16 switches on --tpu, and the trainer asks torch_xla (checked
    on the run's own exit and error, not on pytest's failure text: test_the_xla_check_refuses_other_failures)."""
    if importlib.util.find_spec("torch_xla") is not None:
        pytest.skip("torch_xla is installed here")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=commands_pythonpath())
    args = train_args(bible_databin, tmp_path, pkg_dir, "--mlm-steps", "en", "--max-update", "1",
                      "--disable-validation", "--bf16")
    proc = subprocess.run([preload.python(), "-m", "fairseq_cli.train", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert fails_for_want_of_xla(proc), proc.stderr[-3000:]
    assert "--tpu" not in args and not (tmp_path / "checkpoint_last.pt").exists()


def test_the_xla_check_refuses_other_failures():
    """The mutation the old check let through: a run that fails for another reason while its output mentions
    xla (pytest.raises(BaseException, match="xla") matched pytest's own failure text), or that succeeds."""
    def done(code, stderr):
        return subprocess.CompletedProcess([], code, "", stderr)

    xla = ('Traceback (most recent call last):\n  File "fairseq/utils.py", line 713, in get_tpu_device\n'
           "    return xm.xla_device()\n           ^^^^^^^^^^^^^\n" + NO_XLA + "\n")
    assert fails_for_want_of_xla(done(1, xla))
    assert not fails_for_want_of_xla(done(0, xla))  # exit 0: it ran
    assert not fails_for_want_of_xla(done(1, "INFO | cfg: {'tpu': True, 'xla': ...}\nKeyError: 'bf16'\n"))
    assert not fails_for_want_of_xla(done(1, xla + "During handling ...\nRuntimeError: out of memory\n"))
    assert not fails_for_want_of_xla(done(1, xla.replace("get_tpu_device", "build_model")))  # another None
    assert not fails_for_want_of_xla(done(1, "ModuleNotFoundError: No module named 'torch_xla'\n"))


@pytest.mark.parametrize("enabled", [False, True])
def test_xnli_steps_run_the_criterion_under_autocast(enabled):
    seen = []

    def criterion(model, sample):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return torch.zeros((), requires_grad=True), 1, {}

    task = SimpleNamespace(cfg=SimpleNamespace(autocast_bf16=enabled))
    model = torch.nn.Linear(2, 2)
    XlmXnliTask._autocast(task, criterion)(model, {})
    assert seen == [(enabled, torch.bfloat16)] if enabled else seen[0][0] is False
