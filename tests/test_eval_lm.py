"""``fairseq-eval-lm`` on an ``xlm_pretrain`` CLM: each language's perplexity equals ``fairseq-validate``'s
``clm_ppl_{lang}`` on the same split (the same blocks, the same predicted positions), and bad flags are refused."""

import re

import pytest

from test_pretrain_e2e import logged, train_args

TASK = ["--task", "xlm_pretrain", "--langs", "en,es", "--tokens-per-sample", "64", "--cpu", "--num-workers", "0"]


def eval_lm_result(text):
    """(loss in base 2, perplexity) of fairseq-eval-lm's last line."""
    loss, ppl = re.findall(r"Loss \(base 2\): ([0-9.]+), Perplexity: ([0-9.]+)", text)[-1]
    return float(loss), float(ppl)


@pytest.fixture(scope="module")
def tiny_clm(bible_databin, pkg_dir, run_fairseq, tmp_path_factory):
    """A CLM xlm_tiny trained 3 updates on en and es of ``bible_databin``."""
    save = tmp_path_factory.mktemp("tiny_clm")
    run_fairseq("fairseq_cli.train", train_args(bible_databin, save, pkg_dir, "--clm-steps", "en,es",
                                                "--max-update", "3", "--disable-validation"))
    return save / "checkpoint_last.pt"


def test_eval_lm_perplexity_per_language_equals_validate(tiny_clm, bible_databin, pkg_dir, run_fairseq):
    common = [bible_databin, "--user-dir", pkg_dir, "--path", tiny_clm, *TASK]
    valid = run_fairseq("fairseq_cli.validate", common + ["--clm-steps", "en,es", "--valid-subset", "valid",
                                                          "--batch-size", "8"]).stdout
    out = run_fairseq("fairseq_cli.eval_lm", common + ["--clm-steps", "es", "--gen-subset", "valid",
                                                       "--max-tokens", "1000"])
    loss, ppl = eval_lm_result(out.stdout + out.stderr)
    # eval-lm batches differently (--max-tokens), and sums over the same tokens do not depend on it; validate
    # rounds the loss to 3 decimals, eval-lm to 4: scoring a block's last position (which predicts nothing) or
    # cutting other blocks moves the loss by far more, and en's loss is another number
    assert loss == pytest.approx(logged(valid, "clm_loss_es")[-1], abs=6e-4)
    assert ppl == pytest.approx(logged(valid, "clm_ppl_es")[-1], rel=1e-3)
    assert abs(loss - logged(valid, "clm_loss_en")[-1]) > 0.01


def test_eval_lm_refuses_runs_without_clm_steps_and_context_windows(bible_databin):
    import fairseq_xlm  # noqa: F401
    from fairseq_xlm.tasks.xlm_pretrain import XlmPretrainConfig, XlmPretrainTask

    for steps, window, message in (({"mlm_steps": "en"}, 0, "give --clm-steps"),
                                   ({"clm_steps": "en"}, 8, "--context-window 8")):
        task = XlmPretrainTask.setup_task(XlmPretrainConfig(data=str(bible_databin), langs="en,es", seed=1,
                                                            tokens_per_sample=64, **steps))
        task.load_dataset("valid")
        with pytest.raises(ValueError, match=re.escape(message)):
            task.eval_lm_dataloader(task.dataset("valid"), context_window=window)
