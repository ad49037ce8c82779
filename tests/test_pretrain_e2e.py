"""xlm_pretrain end to end through fairseq-train on a real Bible slice: MLM+TLM, CLM, --restore-file,
2-process CPU data parallelism against a 1-process run, and bad input."""

import os
import re
import socket
import subprocess
from pathlib import Path

import numpy as np
import preload
import pytest
import torch

import fairseq_xlm  # noqa: F401
from fairseq_xlm.tasks.xlm_pretrain import XlmPretrainConfig, XlmPretrainTask

REPO = Path(__file__).resolve().parents[1]


def train_args(data, save_dir, pkg_dir, *extra):
    return [data, "--user-dir", pkg_dir, "--task", "xlm_pretrain", "--arch", "xlm_tiny", "--criterion", "xlm_lm",
            "--langs", "en,es", "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "4",
            "--tokens-per-sample", "64", "--cpu", "--num-workers", "0", "--log-interval", "1",
            "--save-dir", save_dir, "--no-epoch-checkpoints", "--seed", "3", *map(str, extra)]


def logged(text, name):
    """Values of ``name`` in fairseq's train_inner / valid log lines."""
    return [float(v) for v in re.findall(rf"[ ,|]{re.escape(name)}[= ]([0-9.]+)", text)]


def test_mlm_tlm_pretraining_checkpoints_validates_per_language_and_restores(bible_databin, pkg_dir, run_fairseq,
                                                                             tmp_path):
    save = tmp_path / "ckpt"
    def args(max_update):
        return train_args(bible_databin, save, pkg_dir, "--mlm-steps", "en,es,en-es", "--max-update", max_update,
                          "--validate-interval-updates", "2", "--best-checkpoint-metric", "avg_ppl")

    out = run_fairseq("fairseq_cli.train", args(4)).stdout
    assert (save / "checkpoint_last.pt").is_file() and (save / "checkpoint_best.pt").is_file()
    valid = [line for line in out.splitlines() if "valid on 'valid' subset" in line]
    assert len(valid) == 2
    for metric in ("mlm_ppl_en", "mlm_ppl_es", "tlm_ppl_en-es", "mlm_acc_en", "tlm_acc_en-es", "avg_ppl"):
        assert logged(valid[-1], metric), metric
    per_step = [logged(valid[-1], m)[0] for m in ("mlm_ppl_en", "mlm_ppl_es", "tlm_ppl_en-es")]
    assert logged(valid[-1], "avg_ppl")[0] == pytest.approx(sum(per_step) / 3, rel=2e-3)
    assert logged(out, "num_updates")[-1] == 4
    state = torch.load(save / "checkpoint_last.pt")  # weights_only=True through the allow-list
    assert state["model"]["encoder.embeddings.embed_langs.weight"].shape[0] == 2

    resumed = run_fairseq("fairseq_cli.train", args(6) + ["--restore-file", save / "checkpoint_last.pt"]).stdout
    assert "@ 4 updates" in resumed and "loaded checkpoint" in resumed.lower()
    assert logged(resumed, "num_updates")[-1] == 6


def test_clm_pretraining(bible_databin, pkg_dir, run_fairseq, tmp_path):
    out = run_fairseq("fairseq_cli.train", train_args(bible_databin, tmp_path, pkg_dir, "--clm-steps", "en,es",
                                                      "--max-update", "2", "--best-checkpoint-metric",
                                                      "avg_ppl")).stdout
    assert logged(out, "clm_ppl_en") and logged(out, "clm_ppl_es") and not logged(out, "mlm_ppl_en")
    assert (tmp_path / "checkpoint_last.pt").is_file()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_match_one_process_on_the_same_global_batch(bible_databin, pkg_dir, run_fairseq,
                                                                      tmp_path):
    # Three updates: each is one step kind (the authors' schedule), the same on both workers.
    common = ["--mlm-steps", "en,es,en-es", "--max-update", "3", "--disable-validation", "--dropout", "0",
              "--attention-dropout", "0", "--no-save-optimizer-state"]
    one = run_fairseq("fairseq_cli.train", train_args(bible_databin, tmp_path / "one", pkg_dir, *common,
                                                      "--update-freq", "2")).stdout
    init = f"tcp://127.0.0.1:{free_port()}"
    procs = [
        subprocess.Popen(
            [preload.python(), "-m", "fairseq_cli.train",
             *map(str, train_args(bible_databin, tmp_path / "two", pkg_dir, *common)),
             "--distributed-world-size", "2", "--distributed-rank", str(rank), "--distributed-init-method", init,
             "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp", "--distributed-no-spawn"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        for rank in (0, 1)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][-3000:] + outs[1][-3000:]
    two = outs[0]
    assert "distributed init (rank 1)" in (outs[0] + outs[1])
    for metric in ("loss", "gnorm", "wpb"):
        assert len(logged(one, metric)) >= 3, metric
        assert logged(two, metric)[:3] == pytest.approx(logged(one, metric)[:3], rel=1e-3), metric
    a = torch.load(tmp_path / "one" / "checkpoint_last.pt")["model"]
    b = torch.load(tmp_path / "two" / "checkpoint_last.pt")["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def make_task(data, **overrides):
    cfg = XlmPretrainConfig(data=str(data), langs="en,es", mlm_steps="en,es,en-es", seed=1)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return XlmPretrainTask.setup_task(cfg)


def test_bad_input_errors_name_what_exists(bible_databin, tmp_path):
    with pytest.raises(ValueError, match=r"monolingual data for 'ny' .* monolingual: en, es; parallel: en-es"):
        make_task(bible_databin, langs="en,es,ny", mlm_steps="en,ny").load_dataset("train")
    with pytest.raises(ValueError, match=r"parallel data for 'en-fr'.*parallel: en-es"):
        make_task(bible_databin, langs="en,es,fr", mlm_steps="en-fr").load_dataset("valid")
    with pytest.raises(ValueError, match="at least one of --clm-steps / --mlm-steps"):
        make_task(bible_databin, mlm_steps="")
    with pytest.raises(FileNotFoundError, match="dict.txt: no dictionary"):
        make_task(tmp_path)
    # an empty split
    import shutil
    from fairseq.data import indexed_dataset

    data = tmp_path / "data"
    shutil.copytree(bible_databin, data)
    builder = indexed_dataset.make_builder(str(data / "valid.es.bin"), impl="mmap", vocab_size=1000)
    builder.finalize(str(data / "valid.es.idx"))
    (data / "manifest.json").unlink()  # (with it, the size check would name the file first)
    with pytest.raises(ValueError, match=r"valid.es.bin: empty"):
        make_task(data).load_dataset("valid")


def test_long_pairs_are_removed_as_the_authors_and_logged(bible_databin, caplog):
    """Training TLM pairs: no side over --max-len tokens (the authors' filter), nothing over --tokens-per-sample."""
    task = make_task(bible_databin, tokens_per_sample=64, max_len=20)
    with caplog.at_level("WARNING"):
        task.load_dataset("train")
    found = re.search(r"train en-es: (\d+) of 300 pairs removed", caplog.text)
    assert found and int(found.group(1)) > 0
    ds = task.datasets["train"]
    pair = ds.steps["tlm_en-es"].dataset
    src, tgt = np.asarray(pair.src.sizes) - 1, np.asarray(pair.tgt.sizes) - 1
    expected = np.flatnonzero((src >= 1) & (tgt >= 1) & (src <= 20) & (tgt <= 20) & (src + tgt + 4 <= 64))
    assert int(found.group(1)) == 300 - len(expected)
    np.testing.assert_array_equal(ds.keep["tlm_en-es"], expected)
    batches = task.epoch_batches(ds, 1, 1, None, 4, replicas=1)
    used = {d.index for b in batches for d in b if ds.names[d.step] == "tlm_en-es"}
    assert used and used <= set(expected.tolist())


def test_pretrain_recipe_presets(bible_databin, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHON=preload.python(), SCALE="small", BATCH_SIZE="4",
               TOKENS_PER_SAMPLE="64", WARMUP="1", MAX_UPDATE="2", SAVE_EVERY="1", LANG_ALPHA="0.5",
               MAX_UPDATES="7")  # umt.sh's old name: reported, not read
    env.pop("FAIRSEQ_XLM_ENV_CHECKED", None)
    recipe = str(REPO / "recipes" / "pretrain.sh")
    proc = subprocess.run(["bash", recipe, "mlm_tlm", str(bible_databin), str(tmp_path / "s"), "--cpu",
                           "--num-workers", "0", "--log-interval", "1"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)  # not the repo root
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "SCALE=small preset=mlm_tlm langs=en,es steps=--mlm-steps en,es,en-es arch=xlm_tiny" in proc.stdout
    assert "warning: MAX_UPDATES is set but pretrain.sh does not read it (read by umt.sh)" in proc.stderr
    assert "MAX_UPDATE " not in proc.stderr and "LANG_ALPHA" not in proc.stderr  # its own variables: no warning
    assert logged(proc.stdout, "tlm_ppl_en-es") and (tmp_path / "s" / "checkpoint_last.pt").is_file()
    # SAVE_EVERY: a checkpoint every update, the newest kept (a stopped run leaves one)
    assert sorted(p.name for p in (tmp_path / "s").glob("checkpoint_*_*.pt")) == ["checkpoint_1_2.pt"]
    bad_scale = subprocess.run(["bash", recipe, "mlm", str(bible_databin), str(tmp_path / "x")],
                               env=dict(env, SCALE="huge"), capture_output=True, text=True, cwd=REPO)
    assert bad_scale.returncode == 2 and "SCALE=huge: expected paper or small" in bad_scale.stderr
    bad = subprocess.run(["bash", recipe, "tlm", str(bible_databin), str(tmp_path / "x")], env=env,
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "unknown PRESET 'tlm'" in bad.stderr


def test_recipes_prepare_and_pretrain_a_sharded_data_bin(bible_raw, tmp_path):
    """SHARDS=2: prepare_pretrain.sh writes shard0/shard1 (read back per shard), pretrain.sh builds the
    colon-joined data path from them and trains on shard (epoch - 1) % 2 in each epoch."""
    from conftest import BIBLE_MONO

    databin = tmp_path / "bin"
    base = dict(os.environ, OMP_NUM_THREADS="1", PYTHON=preload.python(), SHARDS="2")
    base.pop("FAIRSEQ_XLM_ENV_CHECKED", None)
    prep = subprocess.run(["bash", str(REPO / "recipes" / "prepare_pretrain.sh"), str(bible_raw)],
                          env=dict(base, DATABIN=str(databin), LANGS="en,es", VOCAB="500", SAMPLE_LINES="2000"),
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert prep.returncode == 0, prep.stdout[-2000:] + prep.stderr[-2000:]
    assert "(SHARDS=2)" in prep.stdout and "warning: SHARDS" not in prep.stderr
    lines = {m.group(1): int(m.group(2)) for m in re.finditer(r"(shard\d)/train\.en: (\d+) lines", prep.stdout)}
    assert sorted(lines) == ["shard0", "shard1"] and sum(lines.values()) == BIBLE_MONO["train"]
    assert re.search(r"shard0/valid\.en: 80 lines", prep.stdout) and "shard1/valid" not in prep.stdout
    recipe = str(REPO / "recipes" / "pretrain.sh")
    env = dict(base, SCALE="small", BATCH_SIZE="4", TOKENS_PER_SAMPLE="64", WARMUP="1", MAX_UPDATE="6",
               SAVE_EVERY="0", LANG_ALPHA="0.5")  # SHARDS=2 as for prepare: both read it, no warning
    proc = subprocess.run(["bash", recipe, "mlm", str(databin), str(tmp_path / "s"), "--cpu", "--num-workers", "0",
                           "--epoch-iterations", "1", "--disable-validation", "--log-interval", "1"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "langs=en,es" in proc.stdout and "shards=2" in proc.stdout and "warning: SHARDS" not in proc.stderr
    assert f"[pretrain] data: {databin}/shard0:{databin}/shard1" in proc.stdout
    read = re.findall(r"train: epoch (\d+) reads \S*/(shard\d)", proc.stdout + proc.stderr)
    assert read[:3] == [("1", "shard0"), ("2", "shard1"), ("3", "shard0")]  # 2 MLM steps per epoch, 6 updates
    assert re.findall(r"num_updates (\d+)", proc.stdout)[-1] == "6"
    # SHARDS=3 names a shard that prepare did not write: one error, nothing trained
    bad = subprocess.run(["bash", recipe, "mlm", str(databin), str(tmp_path / "x")], env=dict(env, SHARDS="3"),
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and f"'{databin}/shard2' (of {databin}) has no dict.txt" in bad.stderr


def test_max_pair_tokens_keeps_whole_pairs_beside_short_stream_blocks(bible_databin):
    """--max-pair-tokens: TLM pairs up to 64 tokens while MLM streams are cut into blocks of 32."""
    task = make_task(bible_databin, tokens_per_sample=32, max_pair_tokens=64, max_len=20)
    task.load_dataset("train")
    ds = task.datasets["train"]
    pair = ds.steps["tlm_en-es"].dataset
    src, tgt = np.asarray(pair.src.sizes) - 1, np.asarray(pair.tgt.sizes) - 1
    expected = np.flatnonzero((src >= 1) & (tgt >= 1) & (src <= 20) & (tgt <= 20) & (src + tgt + 4 <= 64))
    assert (src + tgt + 4 > 32)[expected].any()
    np.testing.assert_array_equal(ds.keep["tlm_en-es"], expected)
    assert task.max_positions() == 64
    widths = {}
    for batch in task.epoch_batches(ds, 1, 1, None, 4, replicas=1):
        name = ds.names[batch[0].step]
        sample = ds.collater([ds[d] for d in batch])
        widths[name] = max(widths.get(name, 0), sample["net_input"]["src_tokens"].size(1))
    assert widths["mlm_en"] == widths["mlm_es"] == 32
    assert 32 < widths["tlm_en-es"] <= 64
