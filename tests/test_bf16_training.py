"""bf16 mixed precision for users (--autocast-bf16: the forward under torch.autocast(bfloat16), fp32 weights,
gradients and Adam state): pretraining updates track the fp32 run's losses; the xnli task's steps run
their criterion under autocast. fairseq's own --bf16 implies --tpu and fails on a CPU machine (checked)."""

from types import SimpleNamespace

import pytest
import torch

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


def test_fairseq_bf16_flag_does_not_run_on_a_cpu_machine(bible_databin, pkg_dir, run_fairseq, tmp_path):
    """Why --autocast-bf16 exists: fairseq's --bf16 switches on --tpu, and the trainer asks torch_xla."""
    with pytest.raises(BaseException, match="xla"):
        run_fairseq("fairseq_cli.train", train_args(bible_databin, tmp_path, pkg_dir, "--mlm-steps", "en",
                                                    "--max-update", "1", "--disable-validation", "--bf16"))


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
