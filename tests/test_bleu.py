"""BLEU as the paper reports it next to sacreBLEU (fairseq_xlm.bleu), checked against multi-bleu.perl and
sacrebleu; the authors' evaluation protocol in unsupervised_mt validation (greedy, cap 1.5 * len + 10 checked
against the authors' decoder, <unk> references unmatchable); recipes/evaluate_mt.sh's table."""

import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import sacrebleu
import torch

import fairseq_xlm  # noqa: F401  (registers models, tasks; safe checkpoint loading)
from fairseq import utils
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion
from fairseq.data import Dictionary
from fairseq.logging import metrics
from fairseq_xlm.cli import bleu as bleu_cli
from fairseq_xlm.bleu import REF_UNK, BleuScorer, decode_reference
from fairseq_xlm.data.backtranslation import translate
from fairseq_xlm.models.factory import build_model, model_config
from fairseq_xlm.tasks import mt_evaluation
from fairseq_xlm.tasks.unsupervised_mt import UnsupervisedMtConfig, UnsupervisedMtTask

REPO = Path(__file__).resolve().parents[1]
AUTHORS = Path(__file__).resolve().parents[2] / "shared" / "anchors" / "xlm-authors"
MULTI_BLEU = AUTHORS / "xlm" / "evaluation" / "multi-bleu.perl"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def multi_bleu(tmp_path, hyp_tokens, ref_tokens):
    """multi-bleu.perl's line on tokenized text: (BLEU, [p1..p4], BP, hyp_len, ref_len) as printed."""
    if shutil.which("perl") is None or not MULTI_BLEU.is_file():
        pytest.skip("perl or the authors' multi-bleu.perl is not available")
    (tmp_path / "ref").write_text("".join(r + "\n" for r in ref_tokens), encoding="utf-8")
    out = subprocess.run(["perl", str(MULTI_BLEU), str(tmp_path / "ref")], capture_output=True, text=True,
                         input="".join(h + "\n" for h in hyp_tokens), encoding="utf-8", check=True).stdout
    m = re.match(r"BLEU = ([\d.]+), ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) \(BP=([\d.]+), ratio=[\d.]+, "
                 r"hyp_len=(\d+), ref_len=(\d+)\)", out)
    assert m, out
    return m.group(1), list(m.group(2, 3, 4, 5)), m.group(6), int(m.group(7)), int(m.group(8))


def as_printed(score):
    """A sacrebleu BLEUScore formatted as multi-bleu.perl prints its numbers."""
    return (f"{score.score:.2f}", [f"{p:.1f}" for p in score.precisions], f"{score.bp:.3f}", score.sys_len,
            score.ref_len)


# ------------------------------------------------------------------------------------ the flavours
def test_tokenized_flavour_is_the_authors_moses_preprocessing():
    en, es = BleuScorer("en"), BleuScorer("es")
    # tokenizer.perl -l en -no-escape: clitics split, numbers kept, quotes and punctuation apart
    assert en.tokenize('He said: "it\'s 3.5 dollars, isn\'t it?"', "tok_bleu") == \
        'He said : " it \'s 3.5 dollars , isn \'t it ? "'
    # replace-unicode-punctuation + normalize-punctuation (« » -> ", — -> -, … -> ...), then
    # remove-non-printing-char turns the zero-width space into a space
    assert es.tokenize("«Hola» —dijo… y\u200bya ", "tok_bleu") == '" Hola " - dijo ... y ya'
    # the detokenized flavour is sacrebleu's 13a, untouched by the Moses steps
    assert es.tokenize("«Hola» —dijo…", "bleu") == "«Hola» —dijo…"
    assert en.tokenize("a <b> c.", "bleu") == "a < b > c ."


HYPS = ["The cat sat on the mat.", "He said: \"it's 3.5 dollars, isn't it?\"", "In the beginning God made it.",
        "And the earth was without form", "Then there was light"]
REFS = ["The cat is sitting on the mat.", "He said: \"it's 3.5 dollars, isn't it?\"",
        "In the beginning God created the heaven and the earth.", "And the earth was without form, and void.",
        "And there was light."]


@pytest.mark.parametrize("case", ["corpus", "unk_reference", "no_4gram_match"])
def test_tokenized_bleu_equals_multi_bleu_perl(case, tmp_path):
    hyps, refs = list(HYPS), list(REFS)
    if case == "unk_reference":
        refs[2] = f"In the beginning God {REF_UNK} the heaven and the earth."
        hyps[2] = "In the beginning God ⁇ the heaven and the earth."
    if case == "no_4gram_match":  # uni-, bi- and trigrams match, no 4-gram: multi-bleu.perl says 0
        hyps, refs = ["the cat sat down", "a dog ran"], ["the cat sat up", "a dog ran off"]
    scorer = BleuScorer("en")
    ours = scorer.score(hyps, refs)["tok_bleu"]
    perl = multi_bleu(tmp_path, [scorer.tokenize(h, "tok_bleu") for h in hyps],
                      [scorer.tokenize_ref(r, "tok_bleu") for r in refs])
    assert as_printed(ours) == perl
    if case == "corpus":
        assert 20 < ours.score < 80 and ours.bp < 1  # a non-trivial fixture: partial matches, short output
    if case == "no_4gram_match":
        assert ours.score == 0 and ours.counts[2] > 0 and ours.counts[3] == 0
        assert scorer.score(hyps, refs)["bleu"].score > 0  # sacreBLEU smooths (exp): the flavours differ here


def test_detokenized_flavour_equals_sacrebleu():
    ours = BleuScorer("en").score(HYPS, REFS)["bleu"]
    oracle = sacrebleu.corpus_bleu(HYPS, [REFS])
    assert (ours.score, ours.counts, ours.totals, ours.sys_len, ours.ref_len) == \
        (oracle.score, oracle.counts, oracle.totals, oracle.sys_len, oracle.ref_len)


def test_reference_unk_never_matches():
    # where sentencepiece writes a hypothesis' <unk> as the word ⁇, a reference's is the word <<unk>>
    assert decode_reference(["▁in", "▁the", "<unk>", "▁be", "gin", "ning"], lambda p: "".join(p).replace("▁", " ")) \
        == f"in the {REF_UNK} beginning"
    assert decode_reference(["<unk>", "▁a", "<unk>", "<unk>"], lambda p: "".join(p).replace("▁", " ")) == \
        f"{REF_UNK} a {REF_UNK} {REF_UNK}"
    scorer = BleuScorer("en")
    ref = f"in the beginning {REF_UNK} created the heaven"
    for hyp in ["in the beginning ⁇ created the heaven", f"in the beginning {REF_UNK} created the heaven"]:
        scores = scorer.score([hyp], [ref])
        for flavour, score in scores.items():
            assert score.score < 100, (hyp, flavour)
            assert score.counts[0] < score.totals[0]
    # by hand: 7 words, the 4th unmatched: 6/7 unigrams, 4/6 bigrams, 2/5 trigrams, 0/4 4-grams
    for score in scorer.score(["in the beginning ⁇ created the heaven"], [ref]).values():
        assert (score.counts, score.totals) == ([6, 4, 2, 0], [7, 6, 5, 4])
    assert scorer.score([ref.replace(REF_UNK, "God")], [ref.replace(REF_UNK, "God")])["tok_bleu"].score == \
        pytest.approx(100)


def test_cli_prints_the_labelled_table_and_refuses_unequal_streams(tmp_path, monkeypatch, capsys):
    ref = tmp_path / "ref.txt"
    ref.write_text("".join(r + "\n" for r in REFS), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(read=lambda: "".join(h + "\n" for h in HYPS)))
    scores = bleu_cli.main([str(ref), "--lang", "en", "--name", "greedy"])  # issue 28: the header by default
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| protocol | sacreBLEU (detok) | tokenized BLEU (multi-bleu.perl-style) |"
    assert lines[2] == f"| greedy | {scores['bleu']:.2f} | {scores['tok_bleu']:.2f} |"
    bleu_cli.main([str(ref), "--lang", "en", "--name", "beam", "--no-header"])  # a row to append
    assert capsys.readouterr().out == f"| beam | {scores['bleu']:.2f} | {scores['tok_bleu']:.2f} |\n"
    expect = BleuScorer("en").score(HYPS, REFS)
    assert scores == {f: expect[f].score for f in ("bleu", "tok_bleu")}
    bleu_cli.main([str(ref), "--lang", "en", "--score-only", "tok_bleu"])
    assert capsys.readouterr().out == f"{scores['tok_bleu']:.2f}\n"
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(read=lambda: "one line\n"))
    with pytest.raises(SystemExit, match=r"1 hypotheses on stdin but 5 reference lines in .*ref\.txt"):
        bleu_cli.main([str(ref), "--lang", "en"])


# ------------------------------------------------------------------------- decoding cap vs authors
def never_ending(model, eos):
    """``model`` whose decoder never chooses ``eos`` (so every hypothesis runs to the length cap)."""
    output_layer = model.decoder.output_layer
    model.decoder.output_layer = lambda x, **kw: output_layer(x).index_fill(-1, torch.tensor([eos]), -1e4)
    return model


def authors_decoder(n_words, eos, pad):
    """The authors' TransformerModel decoder (xlm/model/transformer.py), never choosing ``eos``."""
    if not AUTHORS.is_dir():
        pytest.skip(f"the authors' code is not at {AUTHORS}")
    sys.modules.setdefault("apex", types.ModuleType("apex"))
    sys.path.insert(0, str(AUTHORS))
    from xlm.model.transformer import TransformerModel

    params = types.SimpleNamespace(
        n_langs=2, n_words=n_words, eos_index=eos, pad_index=pad, id2lang={0: "en", 1: "es"},
        lang2id={"en": 0, "es": 1}, emb_dim=16, n_heads=2, n_layers=1, dropout=0.0, attention_dropout=0.0,
        sinusoidal_embeddings=False, gelu_activation=True, asm=False, share_inout_emb=True, use_memory=False)
    torch.manual_seed(0)
    decoder = TransformerModel(params, list(range(n_words)), is_encoder=False, with_output=True).eval()
    with torch.no_grad():
        decoder.pred_layer.proj.bias[eos] = -1e4
    return decoder


def test_eval_cap_is_the_authors_max_len(monkeypatch):
    """Authors: max_len = int(1.5 * len1.max() + 10) counts the </s> before and after the words, so at most
    max_len - 2 words. Ours (fairseq's convention: tokens before the forced </s>) with a=1.5, b=8 allows the
    same number of words for a batch of the same padded width, greedy and beam alike."""
    d = Dictionary()
    for i in range(20):
        d.add_symbol(f"w{i}")
    torch.manual_seed(0)
    ours = never_ending(build_model("xlm_mt_tiny", d, ["en", "es"]).eval(), d.eos())
    theirs = authors_decoder(len(d), d.eos(), d.pad())
    # their generate() ends unfinished sentences with a uint8 mask, which torch < 1.2 accepted
    masked_fill_ = torch.Tensor.masked_fill_
    monkeypatch.setattr(torch.Tensor, "masked_fill_", lambda self, mask, value: masked_fill_(
        self, mask.bool() if mask.dtype == torch.uint8 else mask, value))
    for width in range(3, 12):
        src = torch.randint(d.nspecial, len(d), (2, width))
        src[:, -1] = d.eos()
        src[1, width - 2:] = torch.tensor([d.eos(), d.pad()])  # a shorter sentence: the width counts
        net_input = {"src_tokens": src, "src_lengths": src.ne(d.pad()).sum(1), "src_langs": torch.zeros(2).long()}
        with torch.no_grad():
            generated, lengths = theirs.generate(torch.randn(2, width, 16), torch.tensor([width, width - 1]),
                                                 tgt_lang_id=1, max_len=int(1.5 * width + 10))
        authors_words = [int(n) - 2 for n in lengths]  # lengths count both </s>
        for beam in (1, 2):
            hyps = translate(ours, net_input, 1, beam=beam, max_len_a=1.5, max_len_b=8)
            assert [len(h) - 1 for h in hyps] == authors_words, (width, beam)


# ------------------------------------------------------------------------------ validation protocol
def mt_cfg():
    cfg = model_config("xlm_mt_tiny")[1]
    cfg._name = "xlm_mt_tiny"
    return cfg


@pytest.fixture(scope="module")
def valid_setup(bible_databin):
    """(task, model, criterion, two mt:en-es validation batches)."""
    cfg = UnsupervisedMtConfig(data=str(bible_databin), langs="en,es", mt_steps="en-es", eval_bleu=True)
    cfg.seed = 1
    task = UnsupervisedMtTask.setup_task(cfg)
    torch.manual_seed(0)
    model = task.build_model(mt_cfg())
    criterion = LabelSmoothedCrossEntropyCriterion(task, False, 0.0)
    valid = task.load_dataset("valid")
    itr = task.get_batch_iterator(valid, max_tokens=400, max_positions=task.max_positions()).next_epoch_itr(
        shuffle=False)
    batches = [b for b in itr if b["step"] == "mt:en-es"][:2]
    return task, model, criterion, batches


def plain_word(task, targets):
    """(sentence, piece index) of a one-piece alphabetic word with at least 3 words on each side, between
    letters, so that replacing it leaves every other token as it was."""
    for row, target in enumerate(targets):
        if task.dictionary.unk() in target:
            continue
        pieces = [task.dictionary[t] for t in target.tolist()[:-1]]  # without </s>
        starts = [i for i, p in enumerate(pieces) if p.startswith("▁")]
        for n, j in enumerate(starts[3:-3], start=3):
            if pieces[j + 1].startswith("▁") and all(pieces[i].lstrip("▁").isalpha() for i in (j - 1, j, j + 1)):
                return row, j
    pytest.skip("no plain word in the middle of a reference of this batch")


def test_validation_decodes_greedy_with_the_eval_cap_not_the_bt_one(valid_setup, monkeypatch):
    task, model, criterion, (batch, _) = valid_setup
    calls = []

    def spy(model, net_input, tgt_lang_id, beam, max_len_a, max_len_b):
        calls.append((tgt_lang_id, beam, max_len_a, max_len_b))
        return translate(model, net_input, tgt_lang_id, beam, max_len_a, max_len_b)

    monkeypatch.setattr(mt_evaluation, "translate", spy)
    _, _, out = task.valid_step(batch, model, criterion)
    assert calls == [(task.lang_id("es"), 1, 1.5, 8)]
    assert (task.cfg.bt_max_len_a, task.cfg.bt_max_len_b) == (1.3, 5)  # the BT cap stays apart
    assert {"_bleu_en_es_sys_len", "_tok_bleu_en_es_sys_len"} <= set(out)
    # the cap in tokens: int(1.5 * padded source width + 8) before </s>
    output_layer = model.decoder.output_layer
    monkeypatch.setattr(model.decoder, "output_layer",
                        lambda x, **kw: output_layer(x).index_fill(-1, torch.tensor([task.dictionary.eos()]), -1e4))
    width = batch["net_input"]["src_tokens"].size(1)
    hyps = translate(model, batch["net_input"], task.lang_id("es"), 1, 1.5, 8)
    assert {len(h) - 1 for h in hyps} == {int(1.5 * width + 8)}
    with pytest.raises(ValueError, match=r"--eval-max-len-b -1: must be >= 0"):
        UnsupervisedMtTask(UnsupervisedMtConfig(data=task.data_dir, eval_max_len_b=-1), task.dictionary,
                           ["en", "es"], False)


def test_reference_unk_in_validation_and_both_names_reduced(valid_setup, monkeypatch, tmp_path):
    """A hypothesis equal to its reference loses exactly the n-grams of the reference's <unk>; reduce_metrics
    logs bleu_en_es and tok_bleu_en_es over all batches, the latter equal to multi-bleu.perl on the same text."""
    task, model, criterion, batches = valid_setup
    pad, unk = task.dictionary.pad(), task.dictionary.unk()
    targets = [[utils.strip_pad(t, pad) for t in b["target"]] for b in batches]
    monkeypatch.setattr(mt_evaluation, "translate", lambda *a, **k: hyps_now)

    def unmatched(out, flavour):
        return [out[f"_{flavour}_en_es_totals_{i}"] - out[f"_{flavour}_en_es_counts_{i}"] for i in range(4)]

    hyps_now = targets[0]  # hypotheses equal to the references
    _, _, same = task.valid_step(batches[0], model, criterion)
    # this Bible slice has real <unk>s in its references (e.g. "Ch<unk>m"): only they lose matches
    has_unk = any(unk in t for t in targets[0])
    for flavour in ("bleu", "tok_bleu"):
        assert (sum(unmatched(same, flavour)) > 0) == has_unk

    # the first reference gets an <unk>; the hypothesis keeps the same ids (so the same <unk>)
    unk_batch = dict(batches[0], target=batches[0]["target"].clone())
    row, j = plain_word(task, targets[0])
    unk_batch["target"][row, j] = unk
    hyps_now = [utils.strip_pad(t, pad) for t in unk_batch["target"]]
    _, _, out_unk = task.valid_step(unk_batch, model, criterion)
    assert REF_UNK in task.decode(unk_batch["target"][row], reference=True).split()
    assert "⁇" in task.decode(hyps_now[row]).split() and REF_UNK not in task.decode(hyps_now[row])
    for flavour in ("bleu", "tok_bleu"):
        # one more unmatched word, in the middle of a sentence: 1, 2, 3, 4 more unmatched n-grams
        assert [u - s for u, s in zip(unmatched(out_unk, flavour), unmatched(same, flavour))] == [1, 2, 3, 4]

    # an imperfect second batch: drop every hypothesis' first word piece
    hyps_now = [h[1:] if len(h) > 2 else h for h in targets[1]]
    _, _, out2 = task.valid_step(batches[1], model, criterion)
    with metrics.aggregate() as agg:
        task.reduce_metrics([out_unk, out2], criterion)
        logged = agg.get_smoothed_values()
    hyp_text = [task.decode(h) for h in [utils.strip_pad(t, pad) for t in unk_batch["target"]]]
    hyp_text += [task.decode(h) for h in hyps_now]
    ref_text = [task.decode(utils.strip_pad(t, pad), reference=True) for b in (unk_batch, batches[1])
                for t in b["target"]]
    scorer = BleuScorer("es")
    corpus = scorer.score(hyp_text, ref_text)
    assert logged["bleu_en_es"] == round(corpus["bleu"].score, 2)
    assert logged["tok_bleu_en_es"] == round(corpus["tok_bleu"].score, 2)
    assert 0 < logged["tok_bleu_en_es"] < 100 and 0 < logged["bleu_en_es"] < 100
    perl = multi_bleu(tmp_path, [scorer.tokenize(h, "tok_bleu") for h in hyp_text],
                      [scorer.tokenize_ref(r, "tok_bleu") for r in ref_text])
    assert f"{logged['tok_bleu_en_es']:.2f}" == perl[0]


# ----------------------------------------------------------------------------------- the recipe
def test_evaluate_mt_recipe_table_and_bad_input(bible_databin, pkg_dir, run_fairseq, tmp_path):
    """Row 1 is the authors' protocol (greedy, --max-len-a 1.5 --max-len-b 8), BEAM=2 adds a labelled row;
    the numbers are fairseq_xlm.bleu's on the hypotheses the recipe kept."""
    run_fairseq("fairseq_cli.train", [
        bible_databin, "--user-dir", pkg_dir, "--task", "unsupervised_mt", "--langs", "en,es", "--mt-steps",
        "en-es", "--arch", "xlm_mt_tiny", "--criterion", "label_smoothed_cross_entropy", "--optimizer", "adam",
        "--lr", "1e-3", "--max-tokens", "300", "--max-update", "1", "--disable-validation", "--cpu",
        "--num-workers", "0", "--no-epoch-checkpoints", "--save-dir", tmp_path / "ckpt"], env=ONE_THREAD)
    # PYTHON is a wrapper that records each command line, so the test sees the decoding flags
    log = tmp_path / "calls.log"
    wrapper = tmp_path / "python.sh"
    wrapper.write_text(f'#!/usr/bin/env bash\necho "REGISTER=${{FAIRSEQ_XLM_REGISTER:-1}} $*" >> "{log}"\n'
                       f'exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    env = dict(os.environ, PYTHON=str(wrapper), BEAM="2", WORKDIR=str(tmp_path), **ONE_THREAD)
    ckpt = tmp_path / "ckpt" / "checkpoint_last.pt"
    proc = subprocess.run(["bash", REPO / "recipes/evaluate_mt.sh", bible_databin, ckpt, "en", "es"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["| protocol | sacreBLEU (detok) | tokenized BLEU (multi-bleu.perl-style) |",
                         "|---|---:|---:|"]
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| greedy, max len 1.5*len+10 (authors')",
                                                             "| beam 2, lenpen 1.0, same max len"]
    calls = log.read_text().splitlines()
    generates = [line for line in calls if "fairseq_cli.generate" in line]
    assert len(generates) == 2
    # five Python start-ups: one checks the checkpoint and writes the reference, and the scorer, which needs
    # neither torch nor fairseq, runs without registering them
    assert len(calls) == 5 and sum("fairseq_xlm.cli.mt_inputs check-checkpoint" in c for c in calls) == 1
    assert sorted(c.split()[0] for c in calls if "fairseq_xlm.cli.bleu" in c) == ["REGISTER=0", "REGISTER=0"]
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]
    assert re.search(r"--beam 1 .*--max-len-a 1\.5 --max-len-b 8 ", generates[0])
    assert re.search(r"--beam 2 .*--max-len-a 1\.5 --max-len-b 8 ", generates[1])
    ref = (tmp_path / "ref.test.en-es.es").read_text(encoding="utf-8").splitlines()
    for line, beam in zip(lines[2:], (1, 2)):
        hyps = (tmp_path / f"hyp.test.en-es.beam{beam}.es").read_text(encoding="utf-8").splitlines()
        assert len(hyps) == len(ref) == 60
        expect = BleuScorer("es").score(hyps, ref)
        assert line.split(" | ")[1:] == [f"{expect['bleu'].score:.2f}", f"{expect['tok_bleu'].score:.2f} |"]

    for bad, message in [({"BEAM": "0"}, "BEAM=0: expected a beam size >= 1"),
                         ({"SCORE_ONLY": "chrf"}, "SCORE_ONLY=chrf: expected bleu or tok_bleu")]:
        proc = subprocess.run(["bash", REPO / "recipes/evaluate_mt.sh", bible_databin, ckpt, "en", "es"],
                              env=dict(env, **bad), capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and message in proc.stderr and proc.stdout == ""
