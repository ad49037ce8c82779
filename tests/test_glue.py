"""GLUE as the authors run it: each task's tsv files (tiny fixtures in GLUE's own column layout) -> our raw
layout, the authors' metrics on hand-made predictions with known values, the criterion's summable metrics
against scikit-learn / scipy, and STS-B (regression) end to end: fairseq-train, validation, evaluate_glue and
its submission file."""

import math
import re

import numpy as np
import pytest
import torch

from fairseq_xlm.cli import evaluate_glue, prepare_xnli
from fairseq_xlm.data.glue import GLUE_TASKS, glue_metrics

# Per task: (train/dev header, test header). None = no header (CoLA's train/dev).
HEADERS = {
    "CoLA": (None, ["index", "sentence"]),
    "SST-2": (["sentence", "label"], ["index", "sentence"]),
    "MRPC": (["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], ["index", "#1 ID", "#2 ID", "#1 String",
                                                                       "#2 String"]),
    "STS-B": (["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
               "score"], ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
                          "sentence2"]),
    "QQP": (["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], ["id", "question1", "question2"]),
    "MNLI": (["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"],
             ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]),
    "QNLI": (["index", "question", "sentence", "label"], ["index", "question", "sentence"]),
    "RTE": (["index", "sentence1", "sentence2", "label"], ["index", "sentence1", "sentence2"]),
    "WNLI": (["index", "sentence1", "sentence2", "label"], ["index", "sentence1", "sentence2"]),
}
WORDS = "the light of the world shall shine upon every house and the people rejoiced in the city".split()


def sentence(i: int, k: int) -> str:
    return " ".join(WORDS[(i * 3 + k + j) % len(WORDS)] for j in range(4 + (i + k) % 5)) + (' "quoted' if i == 1 else "")


def write_glue(folder, task, n_train=4, n_dev=4, n_test=3, seed=0):
    """GLUE's files of ``task`` with filler in the other columns; returns {stem: [(first, second, label)]}."""
    spec, (header, test_header) = GLUE_TASKS[task], HEADERS[task]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, stem in spec.splits:
        n = {"train": n_train, "valid": n_dev, "valid_mm": n_dev}.get(split, n_test)
        labelled = not split.startswith("test")
        cols = header if labelled else test_header
        rows = []
        for i in range(n):
            label = (f"{rng.uniform(0, 5):.2f}" if spec.classes is None else spec.classes[i % len(spec.classes)])
            first, second = sentence(i, 0) + f" {stem}", sentence(i, 1) if spec.second else None
            if cols is None:  # CoLA: source, label, original label, sentence
                row = ["gj04", label, "", first]
            else:
                values = {spec.first: first, spec.label: label, "index": str(i), "id": str(i)}
                if spec.second:
                    values[spec.second] = second
                row = [values.get(c, f"x{c}") for c in cols]
            rows.append(row)
            written.setdefault(stem, []).append((first, second, label if labelled else None))
        lines = ([] if cols is None else ["\t".join(cols)]) + ["\t".join(r) for r in rows]
        (folder / f"{stem}.tsv").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return written


def lines(path):
    return path.read_text(encoding="utf-8").split("\n")[:-1]


@pytest.mark.parametrize("task", sorted(GLUE_TASKS))
def test_extract_glue_reads_each_tasks_files(task, tmp_path):
    written = write_glue(tmp_path / task, task)
    prepare_xnli.main(["extract-glue", "--glue-dir", str(tmp_path / task), "--task", task, "--out", str(tmp_path / "raw")])
    spec = GLUE_TASKS[task]
    for split, stem in spec.splits:
        rows, prefix = written[stem], tmp_path / "raw" / f"{split}.en"
        assert lines(prefix.with_suffix(".en.input0")) == [r[0] for r in rows]
        assert (prefix.with_suffix(".en.input1").exists()) == (spec.second is not None)
        if spec.second:
            assert lines(prefix.with_suffix(".en.input1")) == [r[1] for r in rows]
        if split.startswith("test"):
            assert not prefix.with_suffix(".en.label").exists()
            assert lines(prefix.with_suffix(".en.index")) == [str(i) for i in range(len(rows))]
        else:
            assert lines(prefix.with_suffix(".en.label")) == [r[2] for r in rows]
    labels = tmp_path / "raw" / "labels.txt"
    assert (lines(labels) == list(spec.classes)) if spec.classes else not labels.exists()


@pytest.mark.parametrize("task", sorted(GLUE_TASKS))
def test_authors_metrics_have_known_values(task):
    if GLUE_TASKS[task].classes is None:  # STS-B: a monotone map keeps Spearman at 100, Pearson only if linear
        gold = np.array([0.0, 1.0, 2.0, 5.0])
        assert glue_metrics(task, 2 * gold + 1, gold) == pytest.approx({"prs": 100.0, "spr": 100.0})
        assert glue_metrics(task, gold ** 2, gold)["spr"] == pytest.approx(100.0)
        # by hand: deviations (-2, -1, 0, 3) and (-7.5, -6.5, -3.5, 17.5): r = 74 / sqrt(14 * 417)
        assert glue_metrics(task, gold ** 2, gold)["prs"] == pytest.approx(100 * 74 / math.sqrt(14 * 417))
        assert glue_metrics(task, -gold, gold) == pytest.approx({"prs": -100.0, "spr": -100.0})
    elif len(GLUE_TASKS[task].classes) == 2:  # tp 1, fn 1, tn 2: F1 2/3, MCC 2 / sqrt(1 * 2 * 2 * 3)
        assert glue_metrics(task, [1, 0, 0, 0], [1, 1, 0, 0]) == pytest.approx(
            {"acc": 75.0, "f1": 200 / 3, "mcc": 100 * 2 / math.sqrt(12)})
    else:  # MNLI: micro F1 = accuracy; MCC (c*s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)) = 7/10
        assert glue_metrics(task, [0, 1, 2, 0], [0, 1, 2, 2]) == pytest.approx({"acc": 75.0, "f1": 75.0, "mcc": 70.0})


def test_criterion_metrics_are_scikit_learn_and_scipy_over_batches():
    from fairseq import metrics
    from scipy.stats import pearsonr
    from sklearn.metrics import f1_score, matthews_corrcoef

    from fairseq_xlm.criterions.xlm_glue import XlmGlueCriterion, binary_scores, pearson_from_moments

    rng = np.random.default_rng(3)
    gold, pred = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    tp, fp = int(((pred == 1) & (gold == 1)).sum()), int(((pred == 1) & (gold == 0)).sum())
    fn, tn = int(((pred == 0) & (gold == 1)).sum()), int(((pred == 0) & (gold == 0)).sum())
    assert binary_scores(tp, fp, fn, tn) == pytest.approx(
        {"f1": 100 * f1_score(gold, pred), "mcc": 100 * matthews_corrcoef(gold, pred)})
    x, y = rng.normal(size=40), rng.normal(size=40)
    sums = [x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum()]
    assert pearson_from_moments(40, *sums) == pytest.approx(100 * pearsonr(x, y)[0])
    # logged over two batches (two logging outputs), as validation sums them
    halves = [slice(0, 20), slice(20, 50)]
    logs = [{"n": 30 if h.start else 20, "loss": torch.tensor(1.0), "correct": int((pred[h] == gold[h]).sum()),
             **{k: int(((pred[h] == p) & (gold[h] == g)).sum()) for k, (p, g) in
                zip(("tp", "fp", "fn", "tn"), ((1, 1), (1, 0), (0, 1), (0, 0)))}} for h in halves]
    with metrics.aggregate() as agg:  # fairseq's validation reduces each batch on its own
        for log in logs:
            XlmGlueCriterion.reduce_metrics([log])
    values = agg.get_smoothed_values()
    assert values["accuracy"] == pytest.approx(100 * (pred == gold).mean(), abs=0.01)
    assert values["mcc"] == pytest.approx(100 * matthews_corrcoef(gold, pred), abs=0.01)
    assert values["f1"] == pytest.approx(100 * f1_score(gold, pred), abs=0.01)


def test_stsb_regression_end_to_end(bible_databin, pkg_dir, run_fairseq, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("dict.txt", "spm.model"):
        (data / name).symlink_to(bible_databin / name)
    write_glue(tmp_path / "STS-B", "STS-B", n_train=16, n_dev=12, n_test=5, seed=1)
    prepare_xnli.main(["extract-glue", "--glue-dir", str(tmp_path / "STS-B"), "--task", "STS-B", "--out",
                       str(tmp_path / "raw")])
    prepare_xnli.main(["binarize", "--raw", str(tmp_path / "raw"), "--data", str(data), "--subdir", "glue/STS-B"])
    save = tmp_path / "ckpt"
    out = run_fairseq("fairseq_cli.train", [
        data, "--user-dir", pkg_dir, "--task", "xlm_glue", "--glue-task", "STS-B", "--langs", "en,es",
        "--arch", "xlm_tiny", "--criterion", "xlm_glue", "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "8",
        "--max-update", "2", "--max-epoch", "1", "--cpu", "--num-workers", "0", "--save-dir", save, "--seed", "1",
        "--no-epoch-checkpoints", "--best-checkpoint-metric", "pearson", "--maximize-best-checkpoint-metric",
        "--log-format", "simple"]).stdout
    valid = [line for line in out.splitlines() if "valid on 'valid' subset" in line][-1]
    logged_pearson = float(re.search(r"\| pearson ([-0-9.]+)", valid).group(1))
    scores = evaluate_glue.main([str(save / "checkpoint_last.pt"), str(data), "--submission-dir", str(tmp_path / "sub")])
    # the criterion's summed moments and scipy on every prediction: the same Pearson
    assert scores["valid"]["prs"] == pytest.approx(logged_pearson, abs=0.01)
    assert set(scores["valid"]) == {"prs", "spr"} and -100 <= scores["valid"]["spr"] <= 100
    rows = lines(tmp_path / "sub" / "STS-B.tsv")
    assert rows[0] == "index\tprediction" and [r.split("\t")[0] for r in rows[1:]] == [str(i) for i in range(5)]
    assert all(0.0 <= float(r.split("\t")[1]) <= 5.0 for r in rows[1:])

    # the regression head both ways: HF's XLMForSequenceClassification predicts our scores, and its import
    # (as an xlm_glue STS-B checkpoint) scores as ours
    import transformers

    from fairseq_xlm.cli import convert

    assert convert.main(["fairseq-to-hf", str(save / "checkpoint_last.pt"), str(tmp_path / "hf")]) == 0
    hf = transformers.XLMForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.problem_type == "regression" and hf.config.num_labels == 1
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    first, second = lines(tmp_path / "raw" / "valid.en.input0"), lines(tmp_path / "raw" / "valid.en.input1")
    enc = tok(first, second, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = hf(**enc, langs=torch.full_like(enc["input_ids"], hf.config.lang2id["en"])).logits.squeeze(-1)
    _, ours, _ = evaluate_glue.predict(str(save / "checkpoint_last.pt"), str(data), "valid")
    np.testing.assert_allclose(theirs.numpy(), ours, atol=1e-5)
    assert convert.main(["hf-to-fairseq", str(tmp_path / "hf"), str(tmp_path / "back"), "--cls-task", "xlm_glue",
                         "--glue-task", "STS-B", "--cls-subdir", "glue/STS-B"]) == 0
    again = evaluate_glue.main([str(tmp_path / "back" / "checkpoint.pt"), str(data), "--splits", "valid"])
    assert again["valid"] == pytest.approx(scores["valid"], abs=1e-4)
