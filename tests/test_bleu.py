"""BLEU as the paper reports it next to sacreBLEU (fairseq_xlm.bleu), checked against multi-bleu.perl and
sacrebleu."""

import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import sacrebleu

import fairseq_xlm  # noqa: F401  (registers models, tasks; safe checkpoint loading)
from fairseq_xlm import bleu as bleu_cli
from fairseq_xlm.bleu import REF_UNK, BleuScorer, decode_reference

AUTHORS = Path(__file__).resolve().parents[2] / "shared" / "anchors" / "xlm-authors"
MULTI_BLEU = AUTHORS / "xlm" / "evaluation" / "multi-bleu.perl"
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
    scores = bleu_cli.main([str(ref), "--lang", "en", "--name", "greedy", "--header"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| protocol | sacreBLEU (detok) | tokenized BLEU (multi-bleu.perl-style) |"
    assert lines[2] == f"| greedy | {scores['bleu']:.2f} | {scores['tok_bleu']:.2f} |"
    expect = BleuScorer("en").score(HYPS, REFS)
    assert scores == {f: expect[f].score for f in ("bleu", "tok_bleu")}
    bleu_cli.main([str(ref), "--lang", "en", "--score-only", "tok_bleu"])
    assert capsys.readouterr().out == f"{scores['tok_bleu']:.2f}\n"
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(read=lambda: "one line\n"))
    with pytest.raises(SystemExit, match=r"1 hypotheses on stdin but 5 reference lines in .*ref\.txt"):
        bleu_cli.main([str(ref), "--lang", "en"])
