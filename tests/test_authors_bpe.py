"""The authors' released checkpoints end to end: their tokenization (against their own tools), a fixture-sized
release made with their code -> convert -> prepare --bpe authors -> xnli and unsupervised_mt -> generate.

The release (tests/authors_release.py) is a random authors' ``TransformerModel`` (xlm_tiny's shape) with BPE
codes and a vocabulary learned on real Bible verses in their formats, lowercased and accent-stripped as the
XNLI-15 releases. Skips when ../shared (the authors' code, the Bible corpus) is absent.
"""

import csv
import functools
import gzip
import re

import numpy as np
import pytest
import torch

from authors_release import authors_modules, make_release, perl_moses, strip_accents_lower
from conftest import bible_tsv
from fairseq.data import data_utils
from fairseq_xlm.cli import convert, prepare, prepare_xnli
from fairseq_xlm.data import authors_bpe
from fairseq_xlm.data.authors_bpe import AuthorsBpe, AuthorsBpeError

LANGS = ("en", "es", "ny")
RERUN = {}  # data-bin -> the prepare arguments that made it
COMMON = ["--cpu", "--num-workers", "0", "--optimizer", "adam", "--lr", "1e-3", "--no-epoch-checkpoints",
          "--log-format", "json", "--log-interval", "1", "--seed", "1"]


@functools.lru_cache(maxsize=1)
def _rows():
    with gzip.open(bible_tsv(), "rt", encoding="utf-8") as f:
        return list(csv.reader(f, delimiter="\t"))[1:]


def verses(start: int, stop: int, step: int = 1):
    """{lang: non-empty verses of rows [start, stop) of the real corpus}."""
    rows = _rows()
    return {lang: [r[4 + i] for r in rows[start:stop:step] if r[4 + i].strip()] for i, lang in enumerate(LANGS)}


@pytest.fixture(scope="module")
def release(tmp_path_factory, bible_raw):
    """The fixture release (codes, vocab, model.pth) on 300 training verses of en and es plus 100 of ny, and its
    conversion (checkpoint.pt + dict.txt in conv/)."""
    out = tmp_path_factory.mktemp("release")
    texts = {lang: (bible_raw / f"train.{lang}").read_text(encoding="utf-8").splitlines()[:300] for lang in ("en", "es")}
    texts["ny"] = verses(0, 3000, 30)["ny"]
    files = make_release(out, texts, lowercase=True, emb_dim=64, n_layers=2, n_heads=4)
    assert convert.main(["xlm-to-fairseq", str(files["pth"]), str(out / "conv")]) == 0
    return dict(files, conv=out / "conv")


# ---------------------------------------------------------------- tokenization against the authors' tools


def authors_tokenization(lines, lang, codes):
    """The authors' tokenize.sh + lowercase_and_remove_accent.py + fastBPE applybpe on ``lines``: Moses' perl
    normalize-punctuation and tokenizer (as packaged by ``mosestokenizer``), fastBPE's C++ BPE."""
    fastBPE = pytest.importorskip("fastBPE")
    words = [line.split() for line in perl_moses(lines, lang)]
    lowered = [" ".join(strip_accents_lower(w) for w in line) for line in words]
    return [line.split() for line in fastBPE.fastBPE(str(codes)).apply(lowered)]


@pytest.mark.parametrize("lang", LANGS)
def test_tokenization_equals_the_authors_tools_on_1000_real_verses(release, tmp_path, lang):
    authors_bpe.write_folder(str(release["codes"]), str(release["vocab"]), str(tmp_path / "bpe"), True)
    ours = AuthorsBpe(str(tmp_path / "bpe"))
    lines = verses(5000, 9000, 3)[lang][:1000]
    assert len(lines) == 1000
    theirs = authors_tokenization(lines, lang, release["codes"])
    mine = ours.batch(lines, lang)
    assert [i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b] == []
    assert sum(len(x) for x in mine) > 20_000 and any("@@" in p for x in mine for p in x)
    # lines where sacremoses / HF differ from the perl scripts (corrected in AuthorsBpe): single quotes, a
    # low-9 quote, a tab and a zero-width space inside words
    crafted = ["He said, \u2018Go.\u2019 It\u2018s \u201aodd\u2019 here.", "tab\tinside and zero\u200bwidth",
               "\u2018Amen.\u2019"]
    assert ours.batch(crafted, lang) == authors_tokenization(crafted, lang, release["codes"])


# ---------------------------------------------------------------- the whole path


@pytest.fixture(scope="module")
def authors_databin(release, bible_raw, tmp_path_factory):
    """bible_raw (en, es; mono, parallel, genre labels) through prepare --bpe authors with the release."""
    out = tmp_path_factory.mktemp("authors_databin")
    RERUN[str(out)] = ["--raw", str(bible_raw), "--destdir", str(out), "--langs", "en,es", "--bpe", "authors",
                       "--release", str(release["conv"]), "--codes", str(release["codes"]), "--vocab",
                       str(release["vocab"]), "--lowercase-accents"]
    prepare.main(RERUN[str(out)])
    return out


def test_binarized_ids_are_the_release_ids(release, authors_databin):
    """The data-bin's dict.txt is the converted one, and the ids of train.en are what the authors' own
    Dictionary.index_data gives for the same BPE text, up to the known </s>/<pad> swap."""
    assert (authors_databin / "dict.txt").read_bytes() == (release["conv"] / "dict.txt").read_bytes()
    AuthorsDictionary, _ = authors_modules()
    dico = AuthorsDictionary.read_vocab(str(release["vocab"]))
    theirs = AuthorsDictionary.index_data(str(authors_databin / "prep" / "bpe" / "train.en"), None, dico)
    sentences = torch.from_numpy(theirs["sentences"].astype(np.int64))
    swap = torch.arange(len(dico))
    swap[1], swap[2] = 2, 1  # authors' </s>=1, <pad>=2; fairseq's <pad>=1, </s>=2
    ours = data_utils.load_indexed_dataset(str(authors_databin / "train.en"), None, "mmap")
    flat = torch.cat([ours[i] for i in range(len(ours))])
    assert len(ours) == len(theirs["positions"]) == 600
    assert torch.equal(flat, swap[sentences])
    unk = int((flat == 3).sum())
    assert unk < 0.01 * len(flat)  # the Moses + BPE text is covered by the release's vocabulary
    # a rerun skips every finished stage
    before = {p.name: p.stat().st_mtime_ns for p in authors_databin.glob("*.bin")}
    out = prepare.main(RERUN[str(authors_databin)])
    assert set(out) == {"check", "authors_bpe", "encode", "binarize", "manifest"}
    assert {p.name: p.stat().st_mtime_ns for p in authors_databin.glob("*.bin")} == before


def test_xnli_and_unsupervised_mt_from_the_converted_release(release, authors_databin, bible_raw, pkg_dir,
                                                             run_fairseq, tmp_path):
    ckpt = release["conv"] / "checkpoint.pt"
    raw = tmp_path / "genre_raw"
    prepare_xnli.main(["extract-bible", "--bible-raw", str(bible_raw), "--out", str(raw), "--langs", "en,es"])
    prepare_xnli.main(["binarize", "--raw", str(raw), "--data", str(authors_databin)])
    assert (authors_databin / "xnli" / "train.en.input0.bin").is_file()
    run_fairseq("fairseq_cli.train", [
        authors_databin, "--user-dir", pkg_dir, "--task", "xnli", "--langs", "en,es,ny", "--train-langs", "en", "--arch", "xlm_tiny", "--pretrained-xlm-checkpoint", ckpt,
        "--criterion", "xlm_classification", "--batch-size", "8", "--max-update", "3", "--epoch-size", "24",
        "--save-dir", tmp_path / "xnli", *COMMON])
    assert (tmp_path / "xnli" / "checkpoint_last.pt").is_file()
    umt = tmp_path / "umt"
    proc = run_fairseq("fairseq_cli.train", [
        authors_databin, "--user-dir", pkg_dir, "--task", "unsupervised_mt", "--langs", "en,es,ny",
        "--ae-steps", "en,es", "--bt-steps", "en-es-en", "--bt-max-len-a", "0", "--bt-max-len-b", "8",
        "--arch", "xlm_mt_tiny", "--pretrained-xlm-checkpoint", ckpt, "--criterion", "label_smoothed_cross_entropy",
        "--max-tokens", "300", "--max-update", "3", "--eval-bleu", "--eval-bleu-print-samples", "--save-dir", umt,
        *COMMON])
    # validation decodes with the authors' BPE: @@ joined, Moses-detokenized (lowercased as the release)
    bpe = AuthorsBpe(str(authors_databin / "authors_bpe"))
    logs = proc.stdout + proc.stderr
    refs = re.findall(r"en->es hypothesis: .* \| reference: (.*)", logs)
    valid_es = (bible_raw / "valid.en-es.es").read_text(encoding="utf-8").splitlines()
    assert refs and refs[0] in {bpe.decode(bpe.pieces(line, "es"), "es") for line in valid_es}
    assert "@@" not in logs and 0 <= float(re.findall(r'"valid_bleu_en_es": "?([0-9.]+)', logs)[-1]) <= 100
    gen = run_fairseq("fairseq_cli.generate", [
        authors_databin, "--user-dir", pkg_dir, "--task", "unsupervised_mt", "--source-lang", "en",
        "--target-lang", "es", "--path", umt / "checkpoint_last.pt", "--beam", "2", "--max-len-a", "0",
        "--max-len-b", "6", "--cpu", "--num-workers", "0", "--max-tokens", "2000", "--remove-bpe"])
    hyps = [line for line in gen.stdout.splitlines() if line.startswith("H-")]
    sources = [line.split("\t", 1)[1] for line in gen.stdout.splitlines() if line.startswith("S-")]
    assert len(hyps) == 60 and sources and not any("@@" in s for s in sources)
    # the source shown is the authors' tokenization of the raw test text (lowercased Moses words)
    raw_test = (bible_raw / "test.en-es.en").read_text(encoding="utf-8").splitlines()
    expected = {" ".join(bpe.pieces(line, "en")).replace("@@ ", "") for line in raw_test}
    assert sum(s in expected for s in sources) >= 55, sources[:3]


# ---------------------------------------------------------------- bad input: one clear error each


def test_mismatched_files_and_unknown_languages_are_refused(release, bible_raw, tmp_path):
    def run(dest, **flags):
        settings = {"raw": bible_raw, "langs": "en,es", "bpe": "authors", "release": release["conv"],
                    "codes": release["codes"], "vocab": release["vocab"], "destdir": tmp_path / dest, **flags}
        prepare.main([x for k, v in settings.items() if v for x in (f"--{k}", str(v))])

    # a vocabulary that is not the release's (two words swapped)
    lines = release["vocab"].read_text(encoding="utf-8").splitlines(keepends=True)
    lines[5], lines[6] = lines[6], lines[5]
    (tmp_path / "vocab").write_text("".join(lines), encoding="utf-8")
    with pytest.raises(SystemExit, match=r"vocab:6: .* but .*dict.txt has .* at id 19: this vocabulary is not the "
                                         r"release's"):
        run("a", vocab=tmp_path / "vocab")
    # codes of another BPE run (learned on other, Spanish-only verses)
    from authors_release import learn_bpe, moses_words, write_codes_vocab

    other, _ = write_codes_vocab(tmp_path / "other", *learn_bpe(moses_words(verses(9000, 9300)["es"], "es", True), 300))
    with pytest.raises(SystemExit, match=r"codes: \d+ of the \d+ multi-character pieces of .* are made by no merge"):
        run("b", codes=other)
    # a language the release does not know: the first error, before the raw files are looked at
    with pytest.raises(SystemExit, match=r"--langs: \['fr'\] not among the languages of the release .* \(en,es,ny\)"):
        run("c", langs="en,fr")
    with pytest.raises(SystemExit, match=r"conv/checkpoint.pt: missing; --release must be a folder written by"):
        run("d", release=tmp_path / "conv")
    with pytest.raises(SystemExit, match=r"--bpe authors needs --codes"):  # (no --release: learned codes)
        run("e", codes="")
    with pytest.raises(SystemExit, match=r"--codes, --vocab: only with --bpe authors"):
        run("f", bpe="sentencepiece", release="")
    # a vocabulary without uppercase letters asks for --lowercase-accents, a cased one warns against it
    vocab = authors_bpe.read_vocab(str(release["vocab"]))
    assert "pass --lowercase-accents" in authors_bpe.lowercase_hint(vocab, False)
    assert authors_bpe.lowercase_hint(vocab, True) == ""
    assert "made from cased text" in authors_bpe.lowercase_hint([("The", 3), ("the", 2)], True)
    # a malformed codes line names file and line
    (tmp_path / "bad_codes").write_text("a b 3\nc d\n", encoding="utf-8")
    with pytest.raises(AuthorsBpeError, match=r"bad_codes:2: expected 'left right count'"):
        authors_bpe.read_codes(str(tmp_path / "bad_codes"))
