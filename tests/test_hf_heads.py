"""HF heads both ways: a fine-tuned ``xnli`` classifier exported as ``XLMForSequenceClassification`` gives our
logits on the same pairs; a sequence classifier fine-tuned in HF, imported, scores in ``evaluate_xnli`` what HF
predicts; an exported encoder loads in HF's token-classification and question-answering classes (fresh heads)."""

import json
import shutil
from dataclasses import asdict

import pytest
import torch
from omegaconf import OmegaConf

from conftest import BIBLE_NY_LANGS, bible_tsv
from fairseq_xlm.cli import convert, evaluate_xnli, prepare_xnli
from fairseq_xlm.cli.bible import read_tsv
from fairseq_xlm.models import factory
from fairseq_xlm.tasks.xnli import XlmXnliConfig, XlmXnliTask, add_classification_head, classification_logits
from test_convert import native_checkpoint

transformers = pytest.importorskip("transformers")

LABELS = ["law", "history", "poetry"]
SWAP = {1: 2, 2: 1}  # fairseq <pad>=1 </s>=2 <-> HF </s>=1 <pad>=2


def pair_data(tmp, databin, n=20, lang="ny"):
    """DATA (links to ``databin``'s dict.txt + spm.model) with DATA/xnli/test.{lang} made by prepare_xnli from
    ``n`` (English verse, ``lang`` verse) pairs labelled cyclically with LABELS; returns (DATA, firsts, seconds,
    label ids)."""
    data = tmp / "data"
    data.mkdir()
    for name in ("dict.txt", "spm.model"):
        (data / name).symlink_to(databin / name)
    raw = tmp / "raw"
    raw.mkdir()
    verses = [v for v in read_tsv(str(bible_tsv()), BIBLE_NY_LANGS)[: 40 * n: 40] if v.text["en"] and v.text[lang]]
    first, second = [v.text["en"] for v in verses], [v.text[lang] for v in verses]
    first[0], second[0] = "", "  "  # empty texts still get their </s>
    labels = [i % len(LABELS) for i in range(len(verses))]
    (raw / "labels.txt").write_text("".join(name + "\n" for name in LABELS))
    for ext, lines in (("input0", first), ("input1", second), ("label", [LABELS[i] for i in labels])):
        (raw / f"test.{lang}.{ext}").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    prepare_xnli.main(["binarize", "--raw", str(raw), "--data", str(data)])
    return data, first, second, labels


def xnli_task(data):
    return XlmXnliTask.setup_task(OmegaConf.structured(XlmXnliConfig(data=str(data), langs=",".join(BIBLE_NY_LANGS))))


def our_logits(model, task, n):
    """Our classifier's logits on the first ``n`` test examples, batched as the task batches them."""
    task.load_dataset("test")
    ds = task.dataset("test")
    sample = ds.collater([ds[i] for i in range(n)])
    with torch.no_grad():
        return classification_logits(model.eval(), sample["net_input"]), sample["net_input"]["src_tokens"]


@pytest.fixture(scope="module")
def classifier(bible_ny_databin, tmp_path_factory):
    """(DATA, texts, labels, fine-tuned xnli checkpoint, its model, HF export): an xlm_tiny with a 3-class head
    saved as fairseq-train saves a fine-tuned xnli run, and its fairseq-to-hf export."""
    tmp = tmp_path_factory.mktemp("hf_heads")
    data, first, second, labels = pair_data(tmp, bible_ny_databin)
    task = xnli_task(data)
    torch.manual_seed(7)
    model = add_classification_head(factory.build_model("xlm_tiny", task.dictionary, list(BIBLE_NY_LANGS)), 3, 0.1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.3)
    cfg = {"model": {**asdict(model.cfg), "_name": "xlm_tiny"},
           "task": {"_name": "xnli", "data": str(data), "langs": ",".join(BIBLE_NY_LANGS), "cls_subdir": "xnli",
                    "classifier_dropout": 0.1}}
    (tmp / "ckpt").mkdir()
    ckpt = tmp / "ckpt" / "checkpoint_best.pt"
    torch.save({"args": None, "cfg": cfg, "model": model.state_dict(), "extra_state": {"epoch": 2},
                "optimizer_history": [{"criterion_name": "xlm_classification", "optimizer_name": "adam",
                                       "lr_scheduler_state": {"best": 50.0}, "num_updates": 10}]}, ckpt)
    assert convert.main(["fairseq-to-hf", str(ckpt), str(tmp / "hf")]) == 0
    return data, (first, second, labels), ckpt, model, task, tmp / "hf"


def hf_inputs(hf_dir, first, second, lang="ny"):
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    enc = tok(first, second, padding=True, return_tensors="pt")
    lang_id = json.loads((hf_dir / "config.json").read_text())["lang2id"][lang]
    return dict(enc, langs=torch.full_like(enc["input_ids"], lang_id))


def test_exported_classifier_gives_our_logits(classifier):
    data, (first, second, _), _, model, task, hf_dir = classifier
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["architectures"] == ["XLMForSequenceClassification"] and config["id2label"] == {
        "0": "law", "1": "history", "2": "poetry"} and config["summary_first_dropout"] == 0.1
    hf = transformers.XLMForSequenceClassification.from_pretrained(hf_dir).eval()
    inputs = hf_inputs(hf_dir, first, second)
    ours, tokens = our_logits(model, task, len(first))
    assert [[SWAP.get(t, t) for t in row] for row in inputs["input_ids"].tolist()] == tokens.tolist()
    with torch.no_grad():
        theirs = hf(**inputs).logits
    assert theirs.shape == (len(first), 3)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    assert ours.argmax(-1).unique().numel() > 1  # the comparison is not between constant predictions


def test_hf_fine_tuned_classifier_is_evaluated_by_ours(classifier, tmp_path):
    data, (first, second, labels), _, _, _, hf_dir = classifier
    hf = transformers.XLMForSequenceClassification.from_pretrained(hf_dir)
    inputs = hf_inputs(hf_dir, first, second)
    # "fine-tuning in HF": two SGD steps on the gold labels move every weight, the head included
    optimizer = torch.optim.SGD(hf.parameters(), lr=0.5)
    for _ in range(2):
        hf(**inputs, labels=torch.tensor(labels)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    tuned = tmp_path / "hf_tuned"
    hf.save_pretrained(tuned)
    shutil.copy(hf_dir / "vocab.json", tuned)  # what our exports ship beside the weights
    with torch.no_grad():
        predicted = hf.eval()(**inputs).logits
    hf_accuracy = 100.0 * float((predicted.argmax(-1) == torch.tensor(labels)).float().mean())

    assert convert.main(["hf-to-fairseq", str(tuned), str(tmp_path / "ours"), "--labels",
                         str(data / "xnli" / "labels.txt")]) == 0
    ckpt = tmp_path / "ours" / "checkpoint.pt"
    assert evaluate_xnli.evaluate(str(ckpt), str(data)) == {"ny": pytest.approx(hf_accuracy)}
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(ckpt)], arg_overrides={"data": str(data)})
    ours, _ = our_logits(models[0], task, len(first))
    torch.testing.assert_close(ours, predicted, atol=1e-5, rtol=1e-5)


def test_import_refuses_other_class_orders_and_summaries(classifier, tmp_path, capsys):
    _, _, _, _, _, hf_dir = classifier
    (tmp_path / "labels.txt").write_text("history\nlaw\npoetry\n")
    assert convert.main(["hf-to-fairseq", str(hf_dir), str(tmp_path / "a"), "--labels",
                         str(tmp_path / "labels.txt")]) == 1
    assert "id2label ['law', 'history', 'poetry'] is not" in capsys.readouterr().err
    odd = tmp_path / "odd"
    shutil.copytree(hf_dir, odd)
    config = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**config, "summary_activation": "tanh"}))
    assert convert.main(["hf-to-fairseq", str(odd), str(tmp_path / "b")]) == 1
    assert "cannot hold" in capsys.readouterr().err


@pytest.mark.parametrize("cls, head", [("XLMForTokenClassification", "classifier."),
                                       ("XLMForQuestionAnsweringSimple", "qa_outputs."),
                                       ("XLMForQuestionAnswering", "qa_outputs.")])
def test_exported_encoder_loads_in_token_and_qa_classes(cls, head, tmp_path):
    ckpt, _, ours = native_checkpoint(tmp_path)
    assert convert.main(["fairseq-to-hf", str(ckpt), str(tmp_path / "hf")]) == 0
    labels = 5 if cls == "XLMForTokenClassification" else 2  # QA: a start and an end logit
    model, info = getattr(transformers, cls).from_pretrained(tmp_path / "hf", num_labels=labels,
                                                             output_loading_info=True)
    assert info["missing_keys"] and all(not k.startswith("transformer.") for k in info["missing_keys"])
    assert any(k.startswith(head) for k in info["missing_keys"])  # only the fresh head
    torch.testing.assert_close(model.transformer.embeddings.weight[3:],
                               ours.encoder.embeddings.embed_tokens.weight[3:])
    ids = torch.tensor([[1, 7, 8, 9, 1], [1, 10, 1, 2, 2]])
    with torch.no_grad():
        out = model.eval()(input_ids=ids, attention_mask=ids.ne(2).long())
    if cls == "XLMForTokenClassification":
        assert out.logits.shape == (2, 5, 5)
    elif cls == "XLMForQuestionAnsweringSimple":
        assert out.start_logits.shape == out.end_logits.shape == (2, 5)
    else:
        assert out.start_top_log_probs.shape[0] == 2 and torch.isfinite(out.start_top_log_probs).all()
