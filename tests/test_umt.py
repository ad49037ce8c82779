"""unsupervised_mt: online back-translation, step weights, validation sets, bad input, and an
end-to-end run (pretrain -> AE + BT + MT -> BLEU -> fairseq-generate -> recipes/evaluate_mt.sh)."""

import json
import math
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import preload
import pytest
import torch

import fairseq_xlm  # noqa: F401  (registers models, tasks; safe checkpoint loading)
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion
from fairseq.data import Dictionary, LanguagePairDataset, ListDataset
from fairseq_xlm.data import layout
from fairseq_xlm.data.backtranslation import backtranslate_sample, beam_decode, greedy_decode, translate
from fairseq_xlm.data.lang_pair import LangPairDataset
from fairseq_xlm.models.factory import build_model, model_config
from fairseq_xlm.tasks.unsupervised_mt import UnsupervisedMtConfig, UnsupervisedMtTask

REPO = Path(__file__).resolve().parents[1]
W = "\u2581"
# One thread per process: on 2 shared cores, torch's default thread pool oversubscribes and tiny models
# run 3-15x slower (measured: a 2-update UMT run with validation took 25 s with 2 threads, 7 s with 1).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------- dictionary
def piece_dict():
    d = Dictionary()
    for s in [W + "the", W + "cat", "s", W + "sat", "ting", W + "on", W + "mat", "ty", "gy"]:
        d.add_symbol(s)
    d.add_symbol(layout.MASK)
    return d


# ------------------------------------------------------------------------------- back-translation
@pytest.fixture(scope="module")
def tiny():
    d = piece_dict()
    torch.manual_seed(0)
    model = build_model("xlm_mt_tiny", d, ["en", "es"], dropout=0.0, attention_dropout=0.0)
    # A random model repeats one token up to the length limit; a few copy-task steps make its output
    # depend on the input and end at different lengths (which exercises the shrinking greedy batch).
    criterion = LabelSmoothedCrossEntropyCriterion(SimpleNamespace(target_dictionary=d), False, 0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(40):
        loss, _, _ = criterion(model, mono_batch(d, step % 2, n=16, seed=100 + step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.zero_grad()
    return d, model


def mono_batch(d, lang_id, n=6, seed=0):
    rng = np.random.RandomState(seed)
    sents = [torch.tensor(list(rng.randint(d.nspecial, len(d) - 1, size=rng.randint(2, 9))) + [d.eos()])
             for _ in range(n)]
    ds = ListDataset(sents, sizes=np.array([len(s) for s in sents]))
    pair = LangPairDataset(LanguagePairDataset(ds, ds.sizes, d, ds, ds.sizes, d, left_pad_source=False), lang_id,
                           lang_id)
    return pair.collater([pair[i] for i in range(n)])


def test_translate_runs_without_grad_in_eval_mode_into_the_requested_language(tiny):
    d, model = tiny
    seen = []

    def hook(module, args, kwargs):
        seen.append((torch.is_grad_enabled(), module.training, args[2].tolist() if args[2] is not None else None))

    handle = model.decoder.stack.embeddings.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model.train()
        hyps = translate(model, mono_batch(d, 0)["net_input"], tgt_lang_id=1)
    finally:
        handle.remove()
    assert model.training and all(m.training for m in model.modules())  # train mode restored
    assert seen and all(not grad and not training for grad, training, _ in seen)
    assert all(set(np.ravel(langs)) == {1} for *_, langs in seen)  # decoder embeds the target language
    assert all(h[-1] == d.eos() and d.pad() not in h.tolist() for h in hyps)
    # the target language reaches the decoder's scores
    net_input = mono_batch(d, 0)["net_input"]
    model.eval()
    scores = [model(**dict(net_input, tgt_langs=torch.full((6,), lang)))[0] for lang in (0, 1)]
    model.train()
    assert not torch.allclose(scores[0], scores[1])


def test_greedy_decoding_equals_sequence_generator_beam_one(tiny):
    d, model = tiny
    net_input = dict(mono_batch(d, 0, n=8, seed=3)["net_input"])
    net_input.pop("prev_output_tokens")
    net_input["tgt_langs"] = torch.ones(8, dtype=torch.long)
    model.eval()
    static = greedy_decode(model, net_input, 1.0, 4)
    inc = greedy_decode(model, net_input, 1.0, 4, cache="incremental")
    full = greedy_decode(model, net_input, 1.0, 4, cache="none")
    oracle = beam_decode(model, net_input, beam=1, max_len_a=1.0, max_len_b=4)
    assert len({len(h) for h in inc}) > 1  # hypotheses of different lengths
    assert [h.tolist() for h in inc] == [h.tolist() for h in full] == [h.tolist() for h in oracle]
    assert [h.tolist() for h in static] == [h.tolist() for h in oracle]
    width = net_input["src_tokens"].size(1)
    assert max(len(h) for h in inc) <= int(1.0 * width + 4) + 1


def test_backtranslated_sample_feeds_training(tiny):
    d, model = tiny
    sample = mono_batch(d, 0, n=5, seed=4)
    hyps = translate(model, sample["net_input"], 1)
    model.train()
    bt = backtranslate_sample(model, sample, mid_lang_id=1)
    src = bt["net_input"]["src_tokens"]
    for row, hyp, length in zip(src, hyps, bt["net_input"]["src_lengths"]):
        # the authors' encoder input: </s> hypothesis </s>
        assert row[: len(hyp) + 1].tolist() == [d.eos()] + hyp.tolist() and int(length) == len(hyp) + 1
        assert (row[len(hyp) + 1:] == d.pad()).all()  # right-padded
    assert bt["net_input"]["src_langs"].tolist() == [1] * 5 and bt["net_input"]["tgt_langs"].tolist() == [0] * 5
    assert torch.equal(bt["target"], sample["target"])
    assert torch.equal(bt["net_input"]["prev_output_tokens"], sample["net_input"]["prev_output_tokens"])
    assert sample["net_input"]["src_langs"].tolist() == [0] * 5  # the input sample is left untouched
    # teacher forcing on (synthetic es -> real en): the encoder reads the translation, gradients flow
    seen = []
    handle = model.encoder.register_forward_pre_hook(lambda m, args, kw: seen.append(args[0].clone()),
                                                     with_kwargs=True)
    criterion = LabelSmoothedCrossEntropyCriterion(SimpleNamespace(target_dictionary=d), False, 0.1)
    try:
        loss, _, _ = criterion(model, bt)
    finally:
        handle.remove()
    assert torch.equal(seen[0], src)
    model.zero_grad()
    loss.backward()
    assert model.encoder.embed_tokens.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------ task level
def mt_cfg(**overrides):
    """The xlm_mt_tiny model config as fairseq-train would pass it to task.build_model."""
    cfg = model_config("xlm_mt_tiny", **overrides)[1]
    cfg._name = "xlm_mt_tiny"
    return cfg


def make_task(data, **kw):
    cfg = UnsupervisedMtConfig(data=str(data), **kw)
    cfg.seed = 1
    return UnsupervisedMtTask.setup_task(cfg)


def test_lambda_schedules(bible_databin):
    task = make_task(bible_databin, langs="en,es", ae_steps="en", lambda_ae="0:1,100000:0.1,300000:0",
                     lambda_bt="0.5")
    ae = task.lambdas["ae"]
    for step, value in [(0, 1.0), (50000, 0.55), (100000, 0.1), (200000, 0.05), (300000, 0.0), (10**6, 0.0)]:
        assert ae(step) == pytest.approx(value)
    assert task.lambdas["bt"](0) == task.lambdas["bt"](10**6) == 0.5
    assert task.lambdas["mt"](123) == 1.0


def test_train_step_is_one_step_weighted_by_lambda_at_its_iteration_and_validation_keeps_every_sentence(
        bible_databin):
    task = make_task(bible_databin, langs="en,es", ae_steps="en,es", bt_steps="en-es-en,es-en-es",
                     mt_steps="en-es", lambda_ae="0:1,10:0", lambda_mt="0.5", bt_max_len_a=0.0, bt_max_len_b=6,
                     epoch_iterations=12)
    model = task.build_model(mt_cfg())
    criterion = LabelSmoothedCrossEntropyCriterion(task, False, 0.0)
    train = task.load_dataset("train")
    batches = list(task.get_batch_iterator(train, max_tokens=300).next_epoch_itr(shuffle=False))
    steps = [b["step"] for b in batches]
    # iterations 0-9: 2 AE + 1 MT + 2 BT updates; lambda_ae reaches 0 at iteration 10: 3 updates
    assert len(batches) == 10 * 5 + 2 * 3
    assert not any(b["step"].startswith("ae:") and b["iteration"] >= 10 for b in batches)
    assert steps[:5].count("mt:en-es") == 1 and sorted(steps[:2]) == ["ae:en", "ae:es"]
    assert sorted(steps[3:5]) == ["bt:en-es-en", "bt:es-en-es"]

    optimizer = SimpleNamespace(backward=lambda loss: loss.backward())
    model.eval()  # no dropout: the same batch gives the same loss
    model.train = lambda mode=True: model  # keep eval mode inside train_step
    ae = dict(batches[0])
    grads = []
    for iteration in (0, 5):
        model.zero_grad()
        ae["iteration"] = iteration
        loss, size, log = task.train_step(ae, model, criterion, optimizer, update_num=99)
        assert size == log["sample_size"] == log[f"ae_{ae['step'][3:]}:sample_size"] and log["loss"] == float(loss)
        grads.append(model.encoder.embed_tokens.weight.grad.clone())
    torch.testing.assert_close(grads[1], 0.5 * grads[0])  # lambda_ae(5) = 0.5: iteration, not update_num
    bt = next(b for b in batches if b["step"] == "bt:en-es-en")
    _, _, log = task.train_step(bt, model, criterion, optimizer, update_num=0)
    assert log["bt_en-es-en:sample_size"] > 0

    valid = task.load_dataset("valid")
    seen = {}
    itr = task.get_batch_iterator(valid, max_tokens=500, max_positions=task.max_positions(),
                                  required_batch_size_multiple=8).next_epoch_itr(shuffle=False)
    for b in itr:
        seen.setdefault(b["step"], []).extend(b["id"].tolist())
        assert b["net_input"]["src_langs"].unique().numel() == 1
    n_para, n_mono = 60, 80  # tests/conftest.py: BIBLE_PARA / BIBLE_MONO valid sizes
    assert {k: sorted(v) for k, v in seen.items()} == {
        "mt:en-es": list(range(n_para)), "mt:es-en": list(range(n_para)),
        "ae:en": list(range(n_mono)), "ae:es": list(range(n_mono))}


def databin_without(src: Path, dst: Path, prefixes):
    """A copy (symlinks) of a data-bin without the files that start with any of ``prefixes``."""
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith(tuple(prefixes)):
            (dst / f.name).symlink_to(f)
    return dst


def test_bad_input_errors(bible_databin, tmp_path):
    no_es = databin_without(bible_databin, tmp_path / "no_es", ["train.es."])
    with pytest.raises(ValueError, match=r"--bt-steps es-en-es: no monolingual es data .*train\.es\.bin"):
        make_task(no_es, langs="en,es", bt_steps="en-es-en,es-en-es")
    no_para = databin_without(bible_databin, tmp_path / "no_para", ["train.en-es."])
    with pytest.raises(ValueError, match=r"--mt-steps en-es: no parallel data train\.en-es"):
        make_task(no_para, langs="en,es", mt_steps="en-es")
    with pytest.raises(ValueError, match=r"--mt-steps: step 'en-en' translates a language into itself"):
        make_task(bible_databin, langs="en,es", mt_steps="en-en")
    with pytest.raises(ValueError, match=r"--bt-steps: step 'en-en-en' translates a language into itself"):
        make_task(bible_databin, langs="en,es", bt_steps="en-en-en")
    with pytest.raises(ValueError, match=r"--bt-steps: step 'en-es-es' must come back"):
        make_task(bible_databin, langs="en,es", bt_steps="en-es-es")
    with pytest.raises(ValueError, match=r"--source-lang and --target-lang are both en"):
        make_task(bible_databin, source_lang="en", target_lang="en")


def save_xlm(path, vocab_size, task_cfg):
    d = Dictionary()
    while len(d) < vocab_size:
        d.add_symbol(f"w{len(d)}")
    model = build_model("xlm_tiny", d, ["en", "es"])
    torch.save({"model": model.state_dict(), "cfg": {"task": task_cfg}}, path)
    return path


def test_pretrained_checkpoint_of_another_vocabulary_is_refused(bible_databin, tmp_path):
    task = make_task(bible_databin, langs="en,es", ae_steps="en")
    small = save_xlm(tmp_path / "small.pt", 50, {"langs": "en,es"})
    with pytest.raises(ValueError, match=r"small\.pt: vocabulary of 50 symbols, but .*dict\.txt"):
        task.build_model(mt_cfg(pretrained_xlm_checkpoint=str(small)))
    # same size, other symbols: found through the pretraining data-bin's dict.txt
    other = tmp_path / "other_bin"
    other.mkdir()
    lines = (bible_databin / "dict.txt").read_text().splitlines()
    lines[5] = "zzzz 1"
    (other / "dict.txt").write_text("\n".join(lines) + "\n")
    same_size = save_xlm(tmp_path / "same.pt", len(task.dictionary), {"langs": "en,es", "data": str(other)})
    with pytest.raises(ValueError, match=r"same\.pt: pretrained with another vocabulary .* symbol #9"):
        task.build_model(mt_cfg(pretrained_xlm_checkpoint=str(same_size)))
    swapped = save_xlm(tmp_path / "swapped.pt", len(task.dictionary), {"langs": "es,en"})
    with pytest.raises(ValueError, match=r"pretrained with --langs es,en, but this run uses en,es"):
        task.build_model(mt_cfg(pretrained_xlm_checkpoint=str(swapped)))


# ------------------------------------------------------------------------------------ end to end
def json_logs(text, tag):
    """fairseq --log-format json lines of one kind ('train', 'valid')."""
    out = []
    for line in text.splitlines():
        if f"| {tag} |" in line and "{" in line:
            out.append(json.loads(line[line.index("{"):]))
    return out


def test_end_to_end_pretrain_umt_generate_and_score(bible_databin, bible_raw, pkg_dir, run_fairseq, tmp_path):
    common = ["--user-dir", pkg_dir, "--cpu", "--num-workers", "0", "--optimizer", "adam", "--lr", "1e-3",
              "--no-epoch-checkpoints", "--log-format", "json", "--log-interval", "1", "--seed", "3"]
    pre = tmp_path / "pre"
    run_fairseq("fairseq_cli.train", [
        bible_databin, "--task", "xlm_pretrain", "--langs", "en,es", "--mlm-steps", "en,es,en-es",
        "--criterion", "xlm_lm", "--arch", "xlm_tiny", "--max-tokens", "1000", "--tokens-per-sample", "64",
        "--max-update", "2", "--disable-validation", "--save-dir", pre, *common], env=ONE_THREAD)
    umt = tmp_path / "umt"
    proc = run_fairseq("fairseq_cli.train", [
        bible_databin, "--task", "unsupervised_mt", "--langs", "en,es", "--ae-steps", "en,es",
        "--bt-steps", "en-es-en,es-en-es", "--mt-steps", "en-es", "--lambda-ae", "0:1,100:0.1",
        "--bt-max-len-a", "0", "--bt-max-len-b", "8", "--arch", "xlm_mt_tiny",
        "--pretrained-xlm-checkpoint", pre / "checkpoint_last.pt", "--criterion", "label_smoothed_cross_entropy",
        "--label-smoothing", "0.1", "--max-tokens", "300", "--max-update", "5", "--eval-bleu",
        "--best-checkpoint-metric", "bleu_en_es", "--maximize-best-checkpoint-metric", "--save-dir", umt, *common],
        env=ONE_THREAD)
    logs = proc.stdout + proc.stderr
    train = json_logs(logs, "train_inner")
    assert len(train) == 5  # one iteration of the authors' loop: AE en, es (any order), MT en-es, BT x2
    for key in ["ae_loss_en", "ae_loss_es", "bt_loss_en-es-en", "bt_loss_es-en-es", "mt_loss_en-es"]:
        values = [float(t[k]) for t in train for k in (f"train_inner_{key}", key) if t.get(k) is not None]
        assert len(values) == 1 and math.isfinite(values[0]), key
    valid = json_logs(logs, "valid")[-1]
    for key in ["bleu_en_es", "bleu_es_en", "mt_loss_en-es", "mt_loss_es-en", "ae_loss_en", "ae_loss_es"]:
        assert 0 <= float(valid[f"valid_{key}"]) < 100 if key.startswith("bleu") else float(valid[f"valid_{key}"]) > 0
    assert (umt / "checkpoint_best.pt").is_file()

    # fairseq-generate needs no --langs (they travel in the checkpoint) and translates all 60 test pairs
    gen = run_fairseq("fairseq_cli.generate", [
        bible_databin, "--user-dir", pkg_dir, "--task", "unsupervised_mt", "--source-lang", "es", "--target-lang",
        "en", "--path", umt / "checkpoint_best.pt", "--beam", "5", "--max-len-a", "0", "--max-len-b", "6",
        "--cpu", "--num-workers", "0", "--max-tokens", "2000"], env=ONE_THREAD)
    assert sum(line.startswith("H-") for line in gen.stdout.splitlines()) == 60

    env = dict(os.environ, PYTHON=preload.python(), BEAM="2", SCORE_ONLY="bleu", WORKDIR=str(tmp_path), **ONE_THREAD)
    score = subprocess.run(["bash", REPO / "recipes/evaluate_mt.sh", bible_databin, umt / "checkpoint_best.pt",
                            "en", "es"], env=env, capture_output=True, text=True, timeout=300)
    assert score.returncode == 0, score.stderr[-2000:]
    assert 0.0 <= float(score.stdout.strip()) <= 100.0
    # the decoded reference is the raw Spanish text of the test pairs
    ref = (tmp_path / "ref.test.en-es.es").read_text().splitlines()
    assert ref == (bible_raw / "test.en-es.es").read_text().splitlines()

    # a crashing fairseq-generate (an encoder-only checkpoint) gives a failure and no score
    bad = subprocess.run(["bash", REPO / "recipes/evaluate_mt.sh", bible_databin, pre / "checkpoint_last.pt",
                          "en", "es"], env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and bad.stdout.strip() == ""
    assert "is a pretraining checkpoint (xlm_tiny, no decoder); MT needs an xlm_mt" in bad.stderr
    assert "NotImplementedError" not in bad.stderr and "Traceback" not in bad.stderr
    # fairseq-generate itself says the same, instead of failing in reorder_encoder_out
    gen = subprocess.run([preload.python(), "-m", "fairseq_cli.generate", bible_databin, "--user-dir", pkg_dir,
                          "--task", "unsupervised_mt", "--source-lang", "en", "--target-lang", "es", "--path",
                          pre / "checkpoint_last.pt", "--cpu"], env=env, capture_output=True, text=True, timeout=300)
    assert gen.returncode != 0 and "this is a pretraining checkpoint; MT needs an xlm_mt one" in gen.stderr
