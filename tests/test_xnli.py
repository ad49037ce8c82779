"""Task ``xnli``: the sample layout, the first-token classifier and its criterion by hand, pretrained
initialisation, bad inputs, and end-to-end runs (Bible genres through recipes/xnli.sh: pretrain en/es/ny,
fine-tune on en, zero-shot table for es and ny; checkpoint_best.pt is the best validation; the lr x batch
sweep; XNLI-format translate-train in the authors' epochs, one model for all languages or one per language;
two learning rates with fairseq's composite optimizer). Readers: test_xnli_readers.py; batches and epochs
against the authors' code: test_xnli_protocol.py."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import preload
import pytest
import torch
from omegaconf import OmegaConf

import fairseq_xlm  # noqa: F401  (registers the task, criterion and models)
from fairseq import checkpoint_utils, metrics
from fairseq.data import Dictionary
from fairseq_xlm.cli import evaluate_xnli, prepare_xnli
from fairseq_xlm.criterions.xlm_classification import XlmClassificationCriterion
from fairseq_xlm.data.classification_dataset import XlmClassificationDataset, collate_classification
from fairseq_xlm.models.factory import build_model
from fairseq_xlm.models.modules import default_positions
from fairseq_xlm.tasks.xnli import (
    XlmClassificationHead,
    XlmXnliConfig,
    XlmXnliTask,
    add_classification_head,
    classification_logits,
)

FIXTURES = Path(__file__).parent / "fixtures" / "xnli"
REPO = Path(__file__).resolve().parents[1]
TRAIN_COMMON = ["--arch", "xlm_tiny", "--optimizer", "adam", "--lr", "1e-3", "--cpu", "--num-workers", "0",
                "--no-epoch-checkpoints", "--log-format", "simple", "--log-interval", "1", "--seed", "1"]


# ---------------------------------------------------------------- samples, head, criterion


class _Tokens(torch.utils.data.Dataset):
    """A token dataset like fairseq's indexed ones: items end in </s> (2), with ``sizes``."""

    def __init__(self, rows):
        self.rows = [torch.tensor(r) for r in rows]
        self.sizes = [len(r) for r in rows]

    def __getitem__(self, i):
        return self.rows[i]

    def __len__(self):
        return len(self.rows)


def test_pair_sample_is_eos_s1_eos_s2_eos_with_language_ids():
    import numpy as np

    ds = XlmClassificationDataset(_Tokens([[5, 6, 2], [7, 8, 9, 10, 2]]), np.array([1, 0]), lang_id=1, eos=2,
                                  pad=1, input1=_Tokens([[7, 2], [11, 2]]), max_sentence_tokens=4)
    assert ds[0]["tokens"].tolist() == [2, 5, 6, 2, 7, 2]
    # "</s> 7 8 9 10 </s>" is cut to 4 tokens keeping its final </s>: "</s> 7 8 </s>"
    assert ds[1]["tokens"].tolist() == [2, 7, 8, 2, 11, 2]
    assert ds.sizes.tolist() == [6, 6]
    batch = collate_classification([ds[0], {**ds[1], "tokens": ds[1]["tokens"][:4]}], pad=1)
    assert batch["net_input"]["src_tokens"].tolist() == [[2, 5, 6, 2, 7, 2], [2, 7, 8, 2, 1, 1]]
    assert batch["net_input"]["langs"].tolist() == [[1] * 6] * 2
    assert batch["target"].tolist() == [1, 0] and batch["lang"].tolist() == [1, 1]
    # positions run 0.. over the whole pair (the authors' XNLI input does not restart them)
    assert default_positions(batch["net_input"]["src_tokens"], 1).tolist() == [[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 0, 0]]
    single = XlmClassificationDataset(_Tokens([[5, 6, 2]]), np.array([0]), lang_id=0, eos=2, pad=1)
    assert single[0]["tokens"].tolist() == [2, 5, 6, 2]


def _tiny_model(num_classes=3):
    d = Dictionary()
    for w in "abcdefghij":
        d.add_symbol(w)
    d.add_symbol("<mask>")
    torch.manual_seed(0)
    model = build_model("xlm_tiny", d, ["en", "es"])
    return add_classification_head(model, num_classes, dropout=0.1).eval(), d


def test_classifier_reads_the_first_position_only():
    head = XlmClassificationHead(8, 3, dropout=0.5).eval()
    features = torch.randn(2, 5, 8)
    expected = features[:, 0] @ head.out_proj.weight.T + head.out_proj.bias
    assert torch.allclose(head(features), expected, atol=1e-6)
    features[:, 1:] = torch.randn(2, 4, 8)
    assert torch.allclose(head(features), expected, atol=1e-6)


def test_first_token_classifier_on_a_hand_made_batch():
    model, d = _tiny_model()
    tokens = torch.tensor([[2, 4, 5, 2, 6, 2], [2, 7, 2, 8, 2, d.pad()]])
    langs = torch.tensor([[0] * 6, [1] * 6])
    logits = classification_logits(model, {"src_tokens": tokens, "langs": langs})
    hidden, _ = model.encoder.extract_features(tokens, langs)
    w, b = model.classification_heads["xnli"].out_proj.weight, model.classification_heads["xnli"].out_proj.bias
    assert logits.shape == (2, 3)
    assert torch.allclose(logits, hidden[:, 0] @ w.T + b, atol=1e-5)
    # the language id reaches the classifier: the same tokens as Spanish give other logits
    other = classification_logits(model, {"src_tokens": tokens, "langs": 1 - langs})
    assert not torch.allclose(other, logits)
    assert model.encoder.output_bias is None
    groups = {n: p.param_group for n, p in model.named_parameters()}
    assert groups["classification_heads.xnli.out_proj.weight"] == "classifier"
    assert groups["encoder.embeddings.embed_tokens.weight"] == "encoder"


def test_criterion_loss_and_per_language_accuracy_by_hand():
    model, d = _tiny_model()
    head = model.classification_heads["xnli"].out_proj
    with torch.no_grad():  # logits = bias: every example predicts class 1, with known probabilities
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, 2.0, 1.0]))
    criterion = XlmClassificationCriterion(type("T", (), {"langs": ["en", "es"]})())

    def batch(langs, targets):
        tokens = torch.tensor([[2, 4, 5, 2]] * len(langs))
        lang = torch.tensor(langs)
        return {"net_input": {"src_tokens": tokens, "langs": lang[:, None].expand_as(tokens)},
                "target": torch.tensor(targets), "lang": lang, "ntokens": int(tokens.numel())}

    b1, b2 = batch([0, 0, 1, 1], [1, 0, 1, 1]), batch([1, 1], [2, 2])
    logp = torch.log_softmax(torch.tensor([0.0, 2.0, 1.0]), 0)
    loss, n, log1 = criterion(model, b1)
    assert n == 4 and torch.isclose(loss, -(3 * logp[1] + logp[0]), atol=1e-5)
    assert (log1["n:en"], log1["correct:en"], log1["n:es"], log1["correct:es"]) == (2, 1, 2, 2)
    _, _, log2 = criterion(model, b2)
    with metrics.aggregate() as agg:
        XlmClassificationCriterion.reduce_metrics([log1, log2])
        values = agg.get_smoothed_values()
    # en: 1/2 correct; es: 2/4 over both batches (not the mean of per-batch accuracies 100 and 0)
    assert values["accuracy_en"] == 50.0 and values["accuracy_es"] == 50.0 and values["accuracy"] == 50.0
    with metrics.aggregate() as agg:
        XlmClassificationCriterion.reduce_metrics([log1])
        assert agg.get_smoothed_values()["accuracy"] == 75.0  # mean of en 50 and es 100


# ---------------------------------------------------------------- data, task, pretrained checkpoint


@pytest.fixture(scope="module")
def nli_data(bible_databin, tmp_path_factory):
    """DATA with the Bible data-bin's dict.txt + spm.model and DATA/xnli made from the XNLI-format fixtures."""
    data = tmp_path_factory.mktemp("nli_data")
    for name in ("dict.txt", "spm.model"):
        os.symlink(bible_databin / name, data / name)
    raw = data / "raw"
    prepare_xnli.main(["extract", "--out", str(raw), "--langs", "en,es", "--xnli-dir", str(FIXTURES),
                       "--mnli-train", str(FIXTURES / "multinli_1.0_train.jsonl"),
                       "--translate-train-dir", str(FIXTURES)])
    prepare_xnli.main(["binarize", "--raw", str(raw), "--data", str(data)])
    return data


def _pretrain(databin, save, langs, mlm_steps, pkg_dir, run_fairseq):
    """checkpoint_last.pt of 3 xlm_pretrain updates (MLM/TLM ``mlm_steps``) on ``databin`` into ``save``."""
    run_fairseq("fairseq_cli.train", [
        databin, "--user-dir", pkg_dir, "--task", "xlm_pretrain", "--langs", langs, "--mlm-steps", mlm_steps,
        "--criterion", "xlm_lm", "--max-update", "3", "--max-tokens", "2000", "--tokens-per-sample", "64",
        "--save-dir", save, "--disable-validation", *TRAIN_COMMON], cwd=save)
    return save / "checkpoint_last.pt"


@pytest.fixture(scope="module")
def pretrained(bible_databin, tmp_path_factory, pkg_dir, run_fairseq):
    """An xlm_pretrain checkpoint (MLM en, es + TLM en-es, 3 updates) on the Bible data-bin."""
    return _pretrain(bible_databin, tmp_path_factory.mktemp("pretrain"), "en,es", "en,es,en-es", pkg_dir,
                     run_fairseq)


@pytest.fixture(scope="module")
def pretrained_ny(bible_ny_databin, tmp_path_factory, pkg_dir, run_fairseq):
    """An xlm_pretrain checkpoint (MLM en, es, ny; 3 updates) on the en/es/ny Bible data-bin."""
    return _pretrain(bible_ny_databin, tmp_path_factory.mktemp("pretrain_ny"), "en,es,ny", "en,es,ny", pkg_dir,
                     run_fairseq)


@pytest.fixture(scope="module")
def genre_data(bible_ny_databin, tmp_path_factory):
    """DATA (dict.txt, spm.model of the en/es/ny data-bin) with DATA/genre made by recipes/xnli.sh stages 1-2
    (400 / 80 / 80 verses per language)."""
    data = tmp_path_factory.mktemp("genre_data")
    for name in ("dict.txt", "spm.model"):
        os.symlink(bible_ny_databin / name, data / name)
    env = dict(os.environ, WORK=str(data / "work"), LANGS="en,es,ny", GENRE_VERSES="400,80,80",
               PYTHON=preload.python(), OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(REPO / "recipes" / "xnli.sh"), "--stop-stage", "2", str(data), "unused.pt"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return data


def _recipe(data, ckpt, work, *stage_args, **env):
    """recipes/xnli.sh with ``env`` settings (default LANGS en,es,ny); returns the finished process."""
    full = dict(os.environ, WORK=str(work), LANGS="en,es,ny", PYTHON=preload.python(), OMP_NUM_THREADS="1")
    full.update(env)
    proc = subprocess.run(["bash", str(REPO / "recipes" / "xnli.sh"), *stage_args, str(data), str(ckpt)],
                          env=full, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _task(data, **overrides):
    cfg = OmegaConf.structured(XlmXnliConfig(data=str(data), langs="en,es"))
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return XlmXnliTask.setup_task(cfg)


def test_binarized_pairs_match_the_text(nli_data):
    import sentencepiece as spm

    task = _task(nli_data, translate_train=True)
    task.load_dataset("train")
    assert len(task.dataset("train")) == 14 + 12 and task.label_names == ["contradiction", "entailment", "neutral"]
    task.load_dataset("valid")
    first = task.dataset("valid")[0]  # valid.en line 1 of the dev fixture
    sp = spm.SentencePieceProcessor(model_file=str(nli_data / "spm.model"))
    words = [task.dictionary[i] for i in first["tokens"].tolist()]
    s1 = sp.encode("The man walked to the city at night.", out_type=str)
    s2 = sp.encode("A man went to the city.", out_type=str)
    assert words == ["</s>", *s1, "</s>", *s2, "</s>"]
    assert (first["label"], first["lang"]) == (1, 0)  # entailment, en
    # train.es (XNLI-MT, tokenized in the file) gets the very tokens of its raw dev twin
    assert task.dataset("train")[14]["tokens"].tolist() == task.dataset("valid")[8]["tokens"].tolist()


def test_zero_shot_and_translate_train_languages(nli_data):
    task = _task(nli_data)
    assert task.split_langs("train") == ["en"] and task.split_langs("valid") == ["en", "es"]
    assert _task(nli_data, translate_train=True).split_langs("train") == ["en", "es"]
    assert _task(nli_data, eval_langs="es").split_langs("test") == ["es"]
    with pytest.raises(ValueError, match=r"--train-langs: language\(s\) \['ny'\] are not in --langs en,es"):
        _task(nli_data, train_langs="ny")


def test_bad_classification_data(nli_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(nli_data, data, symlinks=True, ignore=shutil.ignore_patterns("raw"))
    cls = data / "xnli"
    with pytest.raises(ValueError, match=r"--num-classes 4 but .*labels.txt has 3 classes"):
        _task(data, num_classes=4)
    with pytest.raises(ValueError, match=r"--eval-langs: language\(s\) \['fr'\] are not in --langs en,es"):
        _task(data, eval_langs="fr")
    # a language in the test data that the model has no language embedding for
    for suffix in ("input0.bin", "input0.idx", "input1.bin", "input1.idx", "label"):
        shutil.copy(cls / f"test.en.{suffix}", cls / f"test.fr.{suffix}")
    with pytest.raises(ValueError, match=r"test\.\*\.input0\.bin: language\(s\) \['fr'\] are not in --langs en,es"):
        _task(data).load_dataset("test")
    # an unknown label, with file and line
    lines = (cls / "valid.es.label").read_text().splitlines()
    lines[2] = "maybe"
    (cls / "valid.es.label").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"valid\.es\.label:3: unknown label 'maybe'"):
        _task(data).load_dataset("valid")
    with pytest.raises(SystemExit, match=r"valid\.es\.label:3: unknown label 'maybe'"):
        prepare_xnli.main(["binarize", "--raw", str(_raw_with_bad_label(nli_data, tmp_path)), "--data", str(data)])


def _raw_with_bad_label(nli_data, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(nli_data / "raw", raw)
    lines = (raw / "valid.es.label").read_text().splitlines()
    lines[2] = "maybe"
    (raw / "valid.es.label").write_text("\n".join(lines) + "\n")
    return raw


def test_pretrained_checkpoint_initialises_the_encoder(nli_data, pretrained, tmp_path):
    ckpt = checkpoint_utils.load_checkpoint_to_cpu(str(pretrained))
    task = _task(nli_data, pretrained_xlm_checkpoint=str(pretrained))
    model = task.build_model(ckpt["cfg"]["model"])
    state = model.state_dict()
    for key, value in ckpt["model"].items():
        if key != "encoder.output_bias":
            assert torch.equal(state[key], value), key
    assert "classification_heads.xnli.out_proj.weight" in state and "encoder.output_bias" not in state

    # the same vocabulary is required: a checkpoint with more embedding rows is refused
    other = dict(ckpt, model=dict(ckpt["model"]))
    emb = other["model"]["encoder.embeddings.embed_tokens.weight"]
    other["model"]["encoder.embeddings.embed_tokens.weight"] = torch.cat([emb, emb[:5]])
    torch.save(other, tmp_path / "other_vocab.pt")
    task = _task(nli_data, pretrained_xlm_checkpoint=str(tmp_path / "other_vocab.pt"))
    with pytest.raises(ValueError, match=r"other_vocab.pt has a vocabulary of \d+ rows but the data dictionary"):
        task.build_model(ckpt["cfg"]["model"])
    # languages in another order would silently swap language embeddings
    cfg = OmegaConf.structured(XlmXnliConfig(data=str(nli_data), langs="es,en",
                                             pretrained_xlm_checkpoint=str(pretrained)))
    with pytest.raises(ValueError, match=r"pretrained with --langs en,es, but this run has --langs es,en"):
        XlmXnliTask.setup_task(cfg).build_model(ckpt["cfg"]["model"])


# ---------------------------------------------------------------- end to end


def _stats(log: str, kind: str):
    """Dicts of the 'train' (epoch summary) or 'valid' lines of a simple-format fairseq log."""
    out = []
    for line in log.splitlines():
        if f"| {kind} |" in line:
            fields = [f.strip().split(" ", 1) for f in line.split(f"| {kind} |", 1)[1].split("|")]
            out.append({f[0]: f[1] for f in fields if len(f) == 2})
    return out


def _accuracy_one_by_one(checkpoint, data, raw, langs, max_tokens=256):
    """{lang: test accuracy in %} computed apart from the task's datasets and batching: raw text through
    spm.model and dict.txt, one unpadded '</s> verse </s>' at a time, the head on the first hidden state."""
    import sentencepiece as spm

    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)], arg_overrides={"data": str(data)})
    model = models[0].eval()
    d = Dictionary.load(str(data / "dict.txt"))
    d.add_symbol("<mask>")
    sp = spm.SentencePieceProcessor(model_file=str(data / "spm.model"))
    label_ids = {name: i for i, name in enumerate((raw / "labels.txt").read_text().split())}
    head = model.classification_heads["xnli"].out_proj
    scores = {}
    for lang_id, lang in enumerate(langs):
        texts = (raw / f"test.{lang}.input0").read_text(encoding="utf-8").splitlines()
        gold = [label_ids[g] for g in (raw / f"test.{lang}.label").read_text().splitlines()]
        assert len(texts) == len(gold) > 0
        hits = 0
        with torch.no_grad():
            for text, label in zip(texts, gold):
                ids = d.encode_line(" ".join(sp.encode(text, out_type=str)), add_if_not_exist=False).long()
                tokens = torch.cat([torch.tensor([d.eos()]), ids])[:max_tokens]
                tokens[-1] = d.eos()
                hidden, _ = model.encoder.extract_features(tokens[None], torch.full_like(tokens[None], lang_id))
                hits += int((hidden[0, 0] @ head.weight.T + head.bias).argmax()) == label
        scores[lang] = 100.0 * hits / len(gold)
    return scores


def test_bible_genres_zero_shot_recipe(genre_data, pretrained_ny):
    """recipes/xnli.sh on an en/es/ny pretraining: Bible genres, fine-tune on en only, zero-shot table for es, ny
    (stages 1-2 ran in the fixture: this run skips them)."""
    langs = ["en", "es", "ny"]
    data, work = genre_data, genre_data / "work"
    env = dict(os.environ, WORK=str(work), LANGS="en,es,ny", GENRE_VERSES="400,80,80",
               MAX_UPDATE="4", BATCH="32", VALIDATE_EVERY="2", RUN="tiny", PYTHON=preload.python(),
               OMP_NUM_THREADS="1")
    recipe = ["bash", str(REPO / "recipes" / "xnli.sh"), str(data), str(pretrained_ny)]
    proc = subprocess.run(recipe, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (work / "table.md").read_text().splitlines()
    assert table[0] == "| model | en | es | ny | avg |" and len(table) == 3
    row = re.fullmatch(r"\| tiny \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", table[2])
    assert row, table[2]
    *accs, avg = map(float, row.groups())
    assert abs(sum(accs) / 3 - avg) <= 0.051
    assert (data / "genre" / "labels.txt").read_text().split() == [
        "Law", "History", "Poetry", "Prophets", "Gospels", "Acts", "Letters", "Revelation"]
    # the table's numbers are the test accuracies of checkpoint_best, recounted from the raw text
    save = work / "checkpoints" / "tiny"
    recount = _accuracy_one_by_one(save / "checkpoint_best.pt", data, work / "raw-genre", langs)
    for lang, acc in zip(langs, accs):
        assert abs(recount[lang] - acc) <= 0.051, (lang, recount, table[2])

    log = (save / "train.log").read_text()
    train = _stats(log, "train")
    assert train and all("accuracy_en" in s and "accuracy_es" not in s and "accuracy_ny" not in s
                         for s in train)  # zero-shot: trained on en only
    valid = _stats(log, "valid")[-1]
    # an independent count (evaluate_xnli, no criterion) of the last validation of checkpoint_last
    scores = evaluate_xnli.evaluate(str(save / "checkpoint_last.pt"), str(data), split="valid")
    assert list(scores) == langs
    for lang in langs:
        assert abs(scores[lang] - float(valid[f"accuracy_{lang}"])) < 0.01
    assert abs(float(valid["accuracy"]) - sum(scores.values()) / 3) < 0.01

    rerun = subprocess.run(recipe, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0 and "skipping" in rerun.stdout
    assert len((work / "table.md").read_text().splitlines()) == 3  # no duplicate row
    bad = subprocess.run(recipe[:-1], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr
    bad = subprocess.run(recipe, env=dict(env, EPOCH_SIZE="-3"), capture_output=True, text=True)
    assert bad.returncode == 2 and "EPOCH_SIZE=-3" in bad.stderr


def _light_or_water(genre_data, tmp_path, subdir, swap):
    """DATA/SUBDIR: 80 texts of 'light ...' (A) or 'water ...' (B), 4 copies for train, 1 for valid and test,
    whose labels are mapped through ``swap``."""
    raw, data = tmp_path / f"raw-{subdir}", tmp_path / "data"
    raw.mkdir()
    data.mkdir(exist_ok=True)
    for name in ("dict.txt", "spm.model"):
        if not (data / name).exists():
            os.symlink(genre_data / name, data / name)
    texts = [(" ".join([word] * (3 + i % 5)), label) for word, label in (("light", "A"), ("water", "B"))
             for i in range(40)]
    (raw / "labels.txt").write_text("A\nB\n")
    for split, copies, mapping in (("train", 4, {}), ("valid", 1, swap), ("test", 1, swap)):
        (raw / f"{split}.en.input0").write_text("".join(t + "\n" for t, _ in texts) * copies)
        (raw / f"{split}.en.label").write_text("".join(mapping.get(g, g) + "\n" for _, g in texts) * copies)
    prepare_xnli.main(["binarize", "--raw", str(raw), "--data", str(data), "--subdir", subdir])
    return data


def test_checkpoint_best_is_the_best_validation(genre_data, pretrained_ny, tmp_path):
    """An epoch longer than the run, validated every 2 updates: checkpoint_best.pt holds the best validation's
    model and mean accuracy, checkpoint_last.pt the last one's, and no other checkpoint stays. The valid set
    is the training texts with their labels swapped, so learning drives its accuracy to 0: the best
    validation comes before the last."""
    data = _light_or_water(genre_data, tmp_path, "swapped", {"A": "B", "B": "A"})
    # 320 training texts in batches of 8: the epoch (40 updates) is longer than the run (12)
    work = tmp_path / "work"
    _recipe(data, pretrained_ny, work, "--stage", "3", "--stop-stage", "3", SUBDIR="swapped",
            RUN="swapped", EPOCH_SIZE="-1", MAX_UPDATE="12", VALIDATE_EVERY="2", BATCH="8", LR="0.003")
    save = work / "checkpoints" / "swapped"
    log = (save / "train.log").read_text()
    valid = _stats(log, "valid")
    updates = [int(v["num_updates"]) for v in valid]
    accuracy = [float(v["accuracy"]) for v in valid]
    assert updates == [2, 4, 6, 8, 10, 12]
    assert accuracy[-1] == 0.0 < max(accuracy), accuracy  # the premise: learning made validation worse
    # fairseq keeps the latest of equal bests (>=)
    best_at = max(i for i, a in enumerate(accuracy) if a == max(accuracy))
    best, last = (checkpoint_utils.load_checkpoint_to_cpu(str(save / f"checkpoint_{k}.pt")) for k in ("best", "last"))
    assert best["extra_state"]["val_loss"] == best["extra_state"]["best"] == max(accuracy)
    assert best["optimizer_history"][-1]["num_updates"] == updates[best_at]
    assert last["extra_state"]["val_loss"] == 0.0 and last["optimizer_history"][-1]["num_updates"] == 12
    assert last["extra_state"]["train_iterator"]["iterations_in_epoch"] == 12  # still inside epoch 1
    head = "classification_heads.xnli.out_proj.weight"
    assert not torch.equal(best["model"][head], last["model"][head])
    # recounted apart from the criterion: checkpoint_best scores the best validation's accuracy
    assert evaluate_xnli.evaluate(str(save / "checkpoint_best.pt"), str(data), split="valid") == {"en": max(accuracy)}
    assert sorted(p.name for p in save.glob("*.pt")) == ["checkpoint_best.pt", "checkpoint_last.pt"]


def test_sweep_selects_by_mean_valid_accuracy(genre_data, pretrained_ny, tmp_path):
    """SWEEP=1 over two learning rates, in epochs of 48 sentences (6 updates of 8), 2 epochs: both runs
    validate at each epoch end, the sweep table shows each run's best mean valid accuracy (the one its
    checkpoint_best.pt records) and test accuracy, and the run that learns is selected into the main table."""
    data = _light_or_water(genre_data, tmp_path, "plain", {})
    work = tmp_path / "work"
    settings = dict(SUBDIR="plain", RUN="sw", SWEEP="1", SWEEP_LRS="0.000001,0.003", SWEEP_BATCHES="8",
                    EPOCH_SIZE="48", MAX_EPOCH="2")
    _recipe(data, pretrained_ny, work, "--stage", "3", **settings)
    names = ["sw-lr0.000001-bs8", "sw-lr0.003-bs8"]
    best = {}
    for name in names:
        valid = _stats((work / "checkpoints" / name / "train.log").read_text(), "valid")
        assert [(v["epoch"], v["num_updates"]) for v in valid] == [("001", "6"), ("002", "12")]
        best[name] = checkpoint_utils.load_checkpoint_to_cpu(str(work / "checkpoints" / name / "checkpoint_best.pt"))
    sweep = (work / "sweep-sw.md").read_text().splitlines()
    assert sweep[0] == "| run | lr | batch | valid avg | test en | test avg |" and len(sweep) == 5
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in sweep[2:]]
    assert [row[0] for row in cells[:2]] == ["sw-lr0.000001-bs8", "**sw-lr0.003-bs8** (selected: best valid avg)"]
    assert [row[1:3] for row in cells[:2]] == [["1e-06", "8"], ["0.003", "8"]]
    for name, row in zip(names, cells):
        assert abs(float(row[3]) - best[name]["extra_state"]["best"]) <= 0.051
    assert best[names[1]]["extra_state"]["best"] > best[names[0]]["extra_state"]["best"]  # lr 0.003 learns
    assert cells[2][0].startswith("per-language best of sweep") and cells[2][4] == cells[1][4]  # one language
    table = (work / "table.md").read_text().splitlines()
    assert table[0] == "| model | en | avg |" and table[2] == f"| sw-lr0.003-bs8 | {cells[1][4]} | {cells[1][4]} |"
    rerun = _recipe(data, pretrained_ny, work, "--stage", "3", **settings)
    assert rerun.stdout.count("finished exists, skipping") == 2 and "already in" in rerun.stdout


def test_translate_train_on_xnli_format_pairs(nli_data, pretrained, pkg_dir, run_fairseq, tmp_path, capsys):
    """One model on both training sets, in the authors' epochs: 26 pairs in batches of 4 are 7 batches of
    4, 4, 4, 4, 4, 3, 3, and an epoch of 10 sentences stops at the third, whatever their order."""
    save = tmp_path / "ckpt"
    proc = run_fairseq("fairseq_cli.train", [
        nli_data, "--user-dir", pkg_dir, "--task", "xnli", "--langs", "en,es", "--translate-train",
        "--pretrained-xlm-checkpoint", pretrained, "--criterion", "xlm_classification", "--epoch-size", "10",
        "--max-epoch", "2", "--batch-size", "4", "--save-dir", save, "--best-checkpoint-metric", "accuracy",
        "--maximize-best-checkpoint-metric", *TRAIN_COMMON], cwd=tmp_path)
    train = _stats(proc.stdout + proc.stderr, "train")
    assert len(train) == 2 and all("accuracy_en" in s and "accuracy_es" in s for s in train)  # both training sets
    assert [(s["epoch"], s["num_updates"]) for s in _stats(proc.stdout + proc.stderr, "valid")] == [
        ("001", "3"), ("002", "6")]
    assert "initialised the encoder from" in proc.stdout + proc.stderr

    out = tmp_path / "table.md"
    scores = evaluate_xnli.main([str(save / "checkpoint_best.pt"), str(nli_data), "--name", "tt", "--out", str(out)])
    assert list(scores) == ["en", "es"]
    assert "| model | en | es | avg |" in capsys.readouterr().out
    evaluate_xnli.main([str(save / "checkpoint_best.pt"), str(nli_data), "--name", "tt-es", "--langs", "es",
                        "--out", str(tmp_path / "es.md")])
    lines = (tmp_path / "es.md").read_text().splitlines()
    assert lines[0] == "| model | es | avg |" and lines[2] == f"| tt-es | {scores['es']:.1f} | {scores['es']:.1f} |"
    with pytest.raises(SystemExit, match="has other columns"):
        evaluate_xnli.main([str(save / "checkpoint_best.pt"), str(nli_data), "--langs", "es", "--out", str(out)])
    with pytest.raises(SystemExit, match=r"--eval-langs: language\(s\) \['fr'\] are not in --langs"):
        evaluate_xnli.main([str(save / "checkpoint_best.pt"), str(nli_data), "--langs", "fr"])


def test_one_model_per_language_with_the_recipe(nli_data, pretrained, tmp_path):
    """The paper's translate-train row is one model per language: TRAIN_LANGS=es EVAL_LANGS=es trains on the
    Spanish training set only, selects on Spanish valid, and writes a Spanish-only table."""
    proc = _recipe(nli_data, pretrained, tmp_path, "--stage", "3", LANGS="en,es", SUBDIR="xnli", RUN="tt-es",
                   TRAIN_LANGS="es", EVAL_LANGS="es", MAX_UPDATE="2", BATCH="4")
    log = (tmp_path / "checkpoints" / "tt-es" / "train.log").read_text()
    assert "train es: 12 examples" in log and "train en" not in log
    stats = _stats(log, "train") + _stats(log, "valid")
    assert stats and all("accuracy_es" in s and "accuracy_en" not in s for s in stats)
    table = (tmp_path / "table.md").read_text().splitlines()
    assert table[0] == "| model | es | avg |" and table[2].startswith("| tt-es | ")
    assert "error" not in proc.stderr.lower()


def test_two_learning_rates_with_the_composite_optimizer(nli_data, pretrained, pkg_dir, run_fairseq, tmp_path):
    """recipes/xnli_two_lr.yaml: the authors' values by default; with encoder lr 0 the encoder stays the
    pretrained one while the head learns."""
    recipe = OmegaConf.load(REPO / "recipes" / "xnli_two_lr.yaml")
    groups = recipe.optimizer.groups
    assert groups.encoder.lr_float == groups.classifier.lr_float == recipe.optimization.lr[0] == 2.5e-5
    assert (recipe.dataset.batch_size, recipe.task.epoch_size, recipe.optimization.max_epoch) == (8, 20000, 250)
    assert recipe.task.classifier_dropout == 0.0 and XlmXnliConfig.classifier_dropout == 0.0
    save = tmp_path / "ckpt"
    run_fairseq("fairseq_cli.hydra_train", [
        "--config-dir", REPO / "recipes", "--config-name", "xnli_two_lr", f"common.user_dir={pkg_dir}",
        f"task.data={nli_data}", "task.langs='en,es'", f"task.pretrained_xlm_checkpoint={pretrained}",
        f"checkpoint.save_dir={save}", f"hydra.run.dir={tmp_path / 'hydra'}", "common.cpu=true",
        "optimization.max_update=2", "optimizer.groups.encoder.lr_float=0.0", "common.log_interval=1",
        "checkpoint.save_interval_updates=1", "dataset.batch_size=4"], cwd=tmp_path)
    before = torch.load(pretrained, weights_only=False)["model"]
    states = [checkpoint_utils.load_checkpoint_to_cpu(str(save / f"checkpoint_1_{k}.pt"))["model"] for k in (1, 2)]
    for state in states:
        assert all(torch.equal(state[k], v) for k, v in before.items() if k != "encoder.output_bias")
    head = "classification_heads.xnli.out_proj.weight"
    assert not torch.equal(states[0][head], states[1][head])


def test_converted_checkpoint_initialises_the_encoder(nli_data, pretrained, tmp_path):
    """A checkpoint converted by fairseq_xlm.cli.convert (here: to HF and back) initialises the same encoder."""
    from fairseq_xlm.cli import convert

    convert.main(["fairseq-to-hf", str(pretrained), str(tmp_path / "hf"), "--dict", str(nli_data / "dict.txt")])
    convert.main(["hf-to-fairseq", str(tmp_path / "hf"), str(tmp_path / "converted")])
    ckpt = checkpoint_utils.load_checkpoint_to_cpu(str(pretrained))
    task = _task(nli_data, pretrained_xlm_checkpoint=str(tmp_path / "converted" / "checkpoint.pt"))
    state = task.build_model(ckpt["cfg"]["model"]).state_dict()
    assert all(torch.equal(state[k], v) for k, v in ckpt["model"].items() if k != "encoder.output_bias")


def test_evaluation_batches_keep_every_example(nli_data):
    """fairseq's batch_by_size drops the remainder of a batch-size multiple; validation must not, nor training."""
    task = _task(nli_data, translate_train=True)
    task.load_dataset("train")
    task.load_dataset("valid")
    valid, train = task.dataset("valid"), task.dataset("train")
    assert len(valid) % 5 and len(train) % 5  # both leave a remainder with batches of a multiple of 5

    def seen(ds):
        itr = task.get_batch_iterator(ds, max_sentences=5, required_batch_size_multiple=5, seed=1)
        return sum(len(batch["id"]) for batch in itr.next_epoch_itr(shuffle=False))

    assert seen(valid) == len(valid)
    assert seen(train) == len(train)  # training: the authors' batches (np.array_split) drop nothing either


def test_data_loader_workers_read_the_same_examples(nli_data):
    """The splits (``layout.load_split``: memory maps opened in the worker) reach 2 data-loader workers, and
    pickled (a spawned worker) give the same examples."""
    import pickle

    task = _task(nli_data)
    task.load_dataset("train")
    train = task.dataset("train")

    def batches(workers):
        itr = task.get_batch_iterator(train, max_sentences=8, seed=3, num_workers=workers)
        return [(b["id"].tolist(), b["net_input"]["src_tokens"], b["target"]) for b in itr.next_epoch_itr()]

    inline = batches(0)
    assert len(inline) > 1
    for (i1, x1, y1), (i2, x2, y2) in zip(inline, batches(2), strict=True):
        assert i1 == i2 and torch.equal(x1, x2) and torch.equal(y1, y2)
    copy = pickle.loads(pickle.dumps(train))
    assert all(torch.equal(train[i]["tokens"], copy[i]["tokens"]) for i in range(len(train)))
