"""NLI readers on fixtures in the real formats: XNLI dev/test TSV, MultiNLI JSONL, XNLI-MT TSV (Moses-tokenized,
read back as raw text so that it matches dev/test), and their errors with file and line."""

from pathlib import Path

import pytest

from fairseq_xlm.cli import prepare_xnli
from fairseq_xlm.data.xnli_readers import (
    NliFormatError,
    by_language,
    read_multinli_jsonl,
    read_xnli_mt_tsv,
    read_xnli_tsv,
)

FIXTURES = Path(__file__).parent / "fixtures" / "xnli"


def test_xnli_tsv_reader_keeps_requested_languages_and_labels():
    examples, dropped = read_xnli_tsv(str(FIXTURES / "xnli.dev.tsv"), ["en", "es"])
    groups = by_language(examples)
    assert list(groups) == ["en", "es"] and dropped == 0  # fr rows are skipped, not dropped
    assert [len(g) for g in groups.values()] == [8, 8]
    first = groups["en"][0]
    assert (first.sentence1, first.sentence2, first.label) == (
        "The man walked to the city at night.", "A man went to the city.", "entailment")
    # bare quotes survive: the files are read without CSV quoting
    assert groups["en"][4].sentence1 == 'He said, "Mama, I\'m home."'
    assert [ex.label for ex in groups["es"]].count("contradiction") == 3
    everything, _ = read_xnli_tsv(str(FIXTURES / "xnli.test.tsv"))
    assert sorted(by_language(everything)) == ["en", "es", "fr"] and len(everything) == 20


def test_multinli_reader_drops_no_consensus_rows():
    examples, dropped = read_multinli_jsonl(str(FIXTURES / "multinli_1.0_train.jsonl"))
    assert (len(examples), dropped) == (14, 2)
    assert {ex.language for ex in examples} == {"en"}
    assert "The prophet wrote a long letter." not in {ex.sentence1 for ex in examples}  # a '-' row
    assert {ex.label for ex in examples} == {"entailment", "neutral", "contradiction"}


def test_translate_train_reader_maps_contradictory_and_detokenizes():
    examples, dropped = read_xnli_mt_tsv(str(FIXTURES / "multinli.train.es.tsv"), "es")
    assert (len(examples), dropped) == (12, 0)
    assert [ex.label for ex in examples].count("contradiction") == 4
    # XNLI-MT is Moses-tokenized ('Nadie cantó nada .'); we read the raw form that dev/test have
    assert examples[1].sentence2 == "Nadie cantó nada." and examples[1].language == "es"
    assert examples[4].sentence1 == 'Él dijo: "Mamá, estoy en casa".'
    verbatim, _ = read_xnli_mt_tsv(str(FIXTURES / "multinli.train.es.tsv"), "es", detokenize=False)
    assert verbatim[4].sentence1 == 'Él dijo : " Mamá , estoy en casa " .'
    english, _ = read_xnli_mt_tsv(str(FIXTURES / "multinli.train.en.tsv"), "en")
    assert (english[8].sentence1, english[8].sentence2) == (
        "The servant didn't bring water; he was tired.", "The servant's jar is (still) empty!")


def test_translate_train_text_is_the_dev_text(tmp_path):
    """The fixtures' XNLI-MT rows 1-8 translate the dev rows: extracted, they are the same raw text, so
    sentencepiece cuts them the same way (English from XNLI-MT too, as when no MultiNLI file is given)."""
    prepare_xnli.main(["extract", "--out", str(tmp_path), "--langs", "en,es", "--xnli-dir", str(FIXTURES),
                       "--translate-train-dir", str(FIXTURES)])
    for lang in ("en", "es"):
        for side in ("input0", "input1"):
            train = (tmp_path / f"train.{lang}.{side}").read_text(encoding="utf-8").splitlines()
            dev = (tmp_path / f"valid.{lang}.{side}").read_text(encoding="utf-8").splitlines()
            assert train[:8] == dev, (lang, side)


def _copy_with_line(tmp_path, name, number, new_line):
    lines = (FIXTURES / name).read_text(encoding="utf-8").splitlines()
    lines[number - 1] = new_line
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_reader_errors_name_file_and_line(tmp_path):
    good = (FIXTURES / "xnli.dev.tsv").read_text(encoding="utf-8").splitlines()[3]
    bad = _copy_with_line(tmp_path, "xnli.dev.tsv", 4, good.rsplit("\t", 2)[0])  # two fields short
    with pytest.raises(NliFormatError, match=r"xnli\.dev\.tsv:4: malformed row: 17 tab-separated fields"):
        read_xnli_tsv(bad)
    bad = _copy_with_line(tmp_path, "xnli.dev.tsv", 5, good.replace("\tneutral\t", "\tmaybe\t", 1))
    with pytest.raises(NliFormatError, match=r"xnli\.dev\.tsv:5: unknown label 'maybe'"):
        read_xnli_tsv(bad)
    bad = _copy_with_line(tmp_path, "multinli_1.0_train.jsonl", 7, '{"gold_label": "neutral", "sentence1": ')
    with pytest.raises(NliFormatError, match=r"multinli_1\.0_train\.jsonl:7: malformed JSON line"):
        read_multinli_jsonl(bad)
    bad = _copy_with_line(tmp_path, "multinli_1.0_train.jsonl", 2,
                          '{"gold_label": "entails", "sentence1": "a", "sentence2": "b"}')
    with pytest.raises(NliFormatError, match=r"multinli_1\.0_train\.jsonl:2: unknown label 'entails'"):
        read_multinli_jsonl(bad)
    bad = _copy_with_line(tmp_path, "multinli.train.es.tsv", 1, "premise\thypothesis\tlabel")
    with pytest.raises(NliFormatError, match=r"multinli\.train\.es\.tsv:1: header lacks column\(s\) \['hypo'\]"):
        read_xnli_mt_tsv(bad, "es")
    with pytest.raises(NliFormatError, match=r"xnli\.test\.tsv: no rows for language\(s\) \['ny'\]"):
        read_xnli_tsv(str(FIXTURES / "xnli.test.tsv"), ["en", "ny"])
