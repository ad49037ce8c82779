"""The paper's experiments as configs (configs/, fairseq_xlm/cli/experiments.py, fairseq_xlm/cli/plan.py):
every stage composes against the code with the authors' settings, the plan prices them from FLOPs, every
twin runs end to end (one process per twin), and a 2-arm x 2-seed sweep runs through
``fairseq-hydra-train -m`` with hydra's submitit local launcher."""

import json
import math
import os
import subprocess
from pathlib import Path

import preload
import pytest
import yaml
from conftest import commands_pythonpath
from omegaconf import OmegaConf

from fairseq_xlm.cli import experiments as E
from fairseq_xlm.cli import plan as P

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
FIXTURES = Path(__file__).parent / "fixtures" / "xnli"
CATALOGUE = yaml.safe_load((CONFIGS / "experiments.yaml").read_text())
EXPERIMENTS = list(CATALOGUE["experiments"])


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=commands_pythonpath())


@pytest.fixture(scope="module")
def twin_data(bible_databin, bible_ny_databin, tmp_path_factory):
    """The twins' data-bins by the catalogue's names: bible (en/es), bible_ny (en/es/ny) and xnli (bible's
    files + xnli/ made from the XNLI-format fixtures, translate-train included)."""
    from fairseq_xlm.cli import prepare_xnli

    xnli = tmp_path_factory.mktemp("twin_xnli")
    for f in bible_databin.iterdir():
        os.symlink(f, xnli / f.name)
    prepare_xnli.main(["extract", "--out", str(xnli / "raw"), "--langs", "en,es", "--xnli-dir", str(FIXTURES),
                       "--mnli-train", str(FIXTURES / "multinli_1.0_train.jsonl"), "--translate-train-dir",
                       str(FIXTURES)])
    prepare_xnli.main(["binarize", "--raw", str(xnli / "raw"), "--data", str(xnli)])
    return {"bible": bible_databin, "bible_ny": bible_ny_databin, "xnli": xnli}


@pytest.fixture(scope="module")
def twins(twin_data, tmp_path_factory):
    """run(name) -> {stage: [stamps]}: the twin of ``name`` run once by the plan CLI (one process; the stages
    in it, stamped), cached for the module."""
    root = tmp_path_factory.mktemp("twins")
    done = {}

    def run(name):
        if name not in done:
            data = twin_data[CATALOGUE["experiments"][name]["twin"]["data"]]
            save = root / name
            proc = subprocess.run([preload.python(), "-m", "fairseq_xlm.cli.plan", name, "--twin", "--run",
                                   "--data", str(data), "--save", str(save)], env=_env(), capture_output=True,
                                  text=True, timeout=600)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
            done[name] = {st.name: [json.loads((Path(s) / E.STAMP).read_text()) for s, _ in st.jobs()]
                          for st in E.stages(CATALOGUE, name, str(data), str(save), twin=True)}
        return done[name]

    return run


def _compose(name, stage_name, twin=False, data="DATA", save="SAVE"):
    stage = next(s for s in E.stages(CATALOGUE, name, data, save, twin=twin) if s.name == stage_name)
    return E.compose_cached(CONFIGS, stage.config, tuple(stage.jobs()[0][1]))


def test_the_authors_settings_reach_the_composed_configs():
    """Each stage's config, composed as fairseq-hydra-train would and merged with our dataclasses, carries
    the authors' README settings (a renamed field or a drifted value fails here)."""
    pre = _compose("xnli15_mlm_tlm", "pretrain")
    assert (pre.model.encoder_layers, pre.model.encoder_embed_dim, pre.model.encoder_attention_heads) == (12, 1024, 8)
    assert (pre.dataset.batch_size, pre.task.tokens_per_sample, pre.optimization.lr[0]) == (32, 256, 1e-4)
    assert (pre.optimizer.adam_betas, pre.lr_scheduler._name, pre.checkpoint.patience) == ("(0.9,0.98)", "inverse_sqrt", 10)
    assert len(pre.task.mlm_steps.split(",")) == 15 + 14 and pre.task.epoch_size == 200000
    assert _compose("xnli15_mlm", "pretrain").task.mlm_steps == pre.task.langs  # no TLM step
    ft = _compose("xnli15_mlm_tlm", "zero_shot")
    assert (ft.dataset.batch_size, ft.task.epoch_size, ft.optimization.max_epoch, ft.optimization.lr[0]) == \
        (8, 20000, 250, 2.5e-5)
    assert ft.task.pretrained_xlm_checkpoint == "SAVE/pretrain/checkpoint_best.pt" and ft.task.langs == pre.task.langs
    tt = E.stages(CATALOGUE, "xnli15_mlm_tlm", "DATA", "SAVE")[2]
    assert tt.sweep[1] == pre.task.langs.split(",")
    tt_cfg = E.compose(CONFIGS, tt.config, tt.jobs()[3][1])
    assert tt_cfg.task.train_langs == tt_cfg.task.eval_langs == "el"  # one model per language
    mlm = _compose("umt_enro", "pretrain_mlm")
    assert (mlm.task.langs, mlm.task.mlm_steps, mlm.task.clm_steps, mlm.model.encoder_layers) == ("en,ro", "en,ro", "", 6)
    assert (mlm.optimizer.adam_betas, mlm.lr_scheduler._name) == ("(0.9,0.999)", "fixed")  # adam,lr=0.0001
    clm = _compose("umt_enro", "pretrain_clm")
    assert (clm.task.clm_steps, clm.task.mlm_steps) == ("en,ro", "")
    umt = _compose("umt_ende", "umt_from_mlm")
    assert (umt.task.ae_steps, umt.task.bt_steps, umt.task.lambda_ae) == ("en,de", "en-de-en,de-en-de", "0:1,100000:0.1,300000:0")
    assert (umt.task.word_shuffle, umt.task.word_dropout, umt.task.word_blank, umt.dataset.max_tokens) == (3, 0.1, 0.1, 2000)
    assert umt.checkpoint.best_checkpoint_metric == "tok_bleu_en_de" and umt.checkpoint.maximize_best_checkpoint_metric
    assert umt.model.pretrained_xlm_checkpoint == "SAVE/pretrain_mlm/checkpoint_best.pt"
    sup, bt = _compose("supervised_roen", "supervised"), _compose("supervised_roen", "supervised_bt")
    assert (sup.task.mt_steps, sup.task.bt_steps, sup.task.ae_steps) == ("en-ro,ro-en", "", "")
    assert (bt.task.mt_steps, bt.task.bt_steps) == ("en-ro,ro-en", "en-ro-en,ro-en-ro")
    low = E.stages(CATALOGUE, "lowres_ne", "DATA", "SAVE")[0]
    arms = [E.compose(CONFIGS, low.config, ov).task for _, ov in low.jobs()]
    assert [(t.langs, t.clm_steps) for t in arms] == [("ne", "ne"), ("ne,hi", "ne,hi"), ("ne,hi,en", "ne,hi,en")]
    assert _compose("embeddings_enes", "pretrain_mlm").task.mlm_steps == "en,es"


def test_a_bad_override_is_refused_by_name():
    with pytest.raises(Exception, match="task.no_such_field|no_such_field"):
        E.compose(CONFIGS, "umt_pretrain_mlm", ["task.langs='en,fr'", "task.no_such_field=1"])
    with pytest.raises(SystemExit, match="unknown experiment 'xnli'; known: xnli15_mlm"):
        P.main(["xnli"])


def test_plan_prices_the_stages_from_flops(capsys):
    """The plan's FLOPs per token are the hand count; GPU-hours scale with GPUs, peak and efficiency."""
    p = P.plan("xnli15_mlm_tlm", "DATA", "SAVE", CONFIGS)
    pre = p["stages"][0]["cost"]
    d, ffn, t, v = 1024, 4096, 256, 95000
    by_hand = 3 * (12 * (8 * d * d + 4 * d * ffn + 4 * t * d) + 0.15 * 2 * d * v)
    assert pre["flops_per_token"] == pytest.approx(by_hand)
    assert (pre["updates"], pre["gpus"], pre["tokens_per_update"]) == (500000, 8, 32 * 256)
    hours = 500000 * 8 * 32 * 256 * by_hand / (312e12 * 0.40) / 3600
    assert pre["gpu_hours"] == pytest.approx(hours) and pre["wall_hours"] == pytest.approx(hours / 8)
    tt = p["stages"][2]["cost"]
    assert tt["jobs"] == 15 and tt["updates"] == 250 * 20000 // 8
    assert p["gpu_hours"] == pytest.approx(sum(s["cost"]["gpu_hours"] for s in p["stages"]))
    assert P.plan("xnli15_mlm_tlm", "DATA", "SAVE", CONFIGS, gpus=16)["stages"][0]["cost"]["gpu_hours"] == \
        pytest.approx(2 * hours)
    P.main(["umt_enfr", "--data", "/d", "--save", "/s", "--efficiency", "0.8"])
    text = capsys.readouterr().out
    assert "ESTIMATE from FLOPs, not a GPU measurement" in text and "80% assumed efficiency" in text
    assert "Table 2: BLEU en->fr / fr->en 33.4 / 33.3" in text and "DATA/en-fr" in text
    assert "--config-name umt_train" in text and "model.pretrained_xlm_checkpoint=/s/pretrain_clm/checkpoint_best.pt" in text
    umt = P.plan("umt_enfr", "/d", "/s", CONFIGS)["stages"][3]["cost"]
    assert umt["tokens_per_update"] == 2000 and umt["updates"] == 50000
    sup = P.plan("supervised_roen", "/d", "/s", CONFIGS)["stages"]
    assert sup[2]["cost"]["flops_per_token"] > sup[1]["cost"]["flops_per_token"]  # BT also generates


@pytest.mark.parametrize("name", ["xnli15_mlm", "xnli15_mlm_tlm", "umt_enfr", "supervised_roen", "lowres_ne",
                                  "embeddings_enes"])
def test_twin_runs_end_to_end(name, twins):
    """Every stage (and sweep job) of the twin trains, validates, saves and records its best metric."""
    results = twins(name)
    for stage, stamps in results.items():
        for stamp in stamps:
            assert math.isfinite(stamp["best"]), (stage, stamp)
            assert (Path(stamp["checkpoint_dir"]) / "checkpoint_last.pt").is_file()
    if name == "lowres_ne":
        assert [s["metric"] for s in results["clm"]] == ["clm_ppl_ny"] * 3
    if name.startswith("umt"):
        assert all(s["metric"] == "tok_bleu_en_es" for s in results["umt_from_mlm"] + results["umt_from_clm"])


@pytest.mark.parametrize("name", ["umt_ende", "umt_enro"])
def test_the_other_pairs_twins_are_the_en_fr_twin(name):
    """en-de and en-ro map onto the Bible's en-es exactly as en-fr does: their twins compose to the same
    configs as umt_enfr's (run above), so running them again would repeat it."""
    for mine, ref in zip(E.stages(CATALOGUE, name, "D", "S", twin=True),
                         E.stages(CATALOGUE, "umt_enfr", "D", "S", twin=True), strict=True):
        assert E.compose_cached(CONFIGS, mine.config, tuple(mine.overrides)) == \
            E.compose_cached(CONFIGS, ref.config, tuple(ref.overrides))
    assert E.stages(CATALOGUE, name, "D", "S")[0].overrides != E.stages(CATALOGUE, "umt_enfr", "D", "S")[0].overrides


def test_a_rerun_skips_stamped_stages(twin_data, tmp_path):
    """A stage stamped with its config and overrides is not run again; other overrides are another stage."""
    stage = E.stages(CATALOGUE, "embeddings_enes", str(twin_data["bible"]), str(tmp_path), twin=True)[0]
    save, overrides = stage.jobs()[0]
    E.write_stamp(save, stage.config, overrides, best=1.0)
    assert E.run_in_process([stage], CONFIGS, log=lambda *_: None)["pretrain_mlm"][0]["best"] == 1.0
    assert not (Path(save) / "checkpoint_last.pt").exists()
    assert E.done(save, stage.config, overrides[:-1]) is None  # other overrides: not this stage's stamp


def test_submitit_local_sweep_of_two_arms_and_two_seeds(twins, twin_data, tmp_path):
    """fairseq-hydra-train -m with hydra/launcher=submitit_local: the translate-train twin's two languages
    (arms) x seeds 1, 2, four jobs in their own processes, each fine-tuning its own model."""
    twins("xnli15_mlm_tlm")  # its pretrained checkpoint
    save = tmp_path / "sweep"
    pre = next(s for s in E.stages(CATALOGUE, "xnli15_mlm_tlm", str(twin_data["xnli"]), "", twin=True)
               if s.name == "translate_train")
    overrides = [o for o in pre.overrides if not o.startswith("task.pretrained_xlm_checkpoint=")]
    ckpt = twins("xnli15_mlm_tlm")["pretrain"][0]["checkpoint_dir"] + "/checkpoint_best.pt"
    cmd = ["-m", "--config-dir", str(CONFIGS), "--config-name", pre.config, f"common.user_dir={E.userdir.path()}",
           *overrides, f"task.pretrained_xlm_checkpoint={ckpt}", "task.train_langs=en,es", "common.seed=1,2",
           "hydra/launcher=submitit_local", f"hydra.sweep.dir={save}", "hydra.launcher.timeout_min=10"]
    proc = subprocess.run([preload.python(), "-m", "fairseq_cli.hydra_train", *cmd], env=_env(), capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    jobs = sorted(p for p in save.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    seen = set()
    for job in jobs:
        cfg = OmegaConf.load(job / ".hydra" / "config.yaml")  # the job's config, as hydra composed it
        seen.add((cfg.task.train_langs, cfg.common.seed))
        assert cfg.task.eval_langs == cfg.task.train_langs
        assert (job / "checkpoints" / "checkpoint_best.pt").is_file()
        log = (job / "hydra_train.log").read_text()  # trained and validated on its own language only
        other = {"en": "es", "es": "en"}[cfg.task.train_langs]
        assert f"accuracy_{cfg.task.train_langs}" in log and f"accuracy_{other}" not in log
    assert seen == {("en", 1), ("en", 2), ("es", 1), ("es", 2)}
