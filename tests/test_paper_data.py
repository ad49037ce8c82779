"""The paper's data prepared as the authors prepare it (fairseq_xlm.paper_data, cli.prepare_paper), against
their own tools: Moses' perl scripts (the ``mosestokenizer`` package), their lowercase_and_remove_accent.py and
segment_th.py, GNU shuf fed by openssl (their split_data), fastBPE's C++ learner compiled from its sdist and its
pip package; then part A's layout -> data-bin -> xlm_pretrain, a kill in every stage, and bad input."""

import csv
import functools
import gzip
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import bible_tsv
from fairseq_xlm.cli import prepare, prepare_paper
from fairseq_xlm.paper_data import CRASH_ENV, fastbpe, seeded_split, text_form

# the authors' scripts: ../shared beside the checkout, as tests/authors_release.py (or $XLM_AUTHORS_SCRIPTS)
AUTHORS = Path(os.environ.get("XLM_AUTHORS_SCRIPTS") or
               Path(__file__).resolve().parents[2] / "shared" / "anchors" / "xlm-authors" / "scripts")
LANGS = ("en", "es", "ny")


@functools.lru_cache(maxsize=1)
def _rows():
    with gzip.open(bible_tsv(), "rt", encoding="utf-8") as f:
        return [r for r in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:] if all(r[4:7])]


def verses(lang: str, start: int, stop: int):
    return [r[4 + LANGS.index(lang)] for r in _rows()[start:stop]]


def _authors_tool(name: str) -> Path:
    path = AUTHORS / "tools" / name
    if not path.is_file():
        pytest.skip(f"the authors' {name} is not at {path}")
    return path


def perl_moses(lines, lang, tokenize=True):
    """replace-unicode-punctuation (HF's port; the perl script is not in mosestokenizer) | normalize-punctuation
    | remove-non-printing-char | tokenizer -no-escape, the perl scripts."""
    mosestokenizer = pytest.importorskip("mosestokenizer")
    if shutil.which("perl") is None:
        pytest.skip("perl is not installed")
    import re
    import unicodedata

    from transformers.models.xlm.tokenization_xlm import replace_unicode_punct

    scripts = Path(mosestokenizer.__file__).parent
    text = "".join(replace_unicode_punct(line) + "\n" for line in lines)
    text = subprocess.run(["perl", scripts / "normalize-punctuation.perl", "-l", lang], input=text,
                          capture_output=True, text=True, check=True).stdout
    text = "".join(" " if unicodedata.category(c).startswith("C") and c != "\n" else c for c in text)
    if not tokenize:
        return text.splitlines()
    text = subprocess.run(["perl", scripts / "tokenizer-v1.1.perl", "-q", "-l", lang, "-no-escape"], input=text,
                          capture_output=True, text=True, check=True).stdout
    # tokenizer-v1.1 predates Moses' fix for a sentence-final ".'", which the authors' tokenizer.perl has
    return [re.sub(r"\.' ?$", " . ' ", line).strip() for line in text.splitlines()]


def authors_python(script: Path, lines, tmp_path):
    """One of the authors' Python filters on ``lines`` (``six``, which lowercase_and_remove_accent.py imports for
    Python 2, shimmed)."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "six.py").write_text("binary_type, text_type = bytes, str\n")
    env = dict(os.environ, PYTHONPATH=str(shim))
    out = subprocess.run([sys.executable, script], input="".join(l + "\n" for l in lines), capture_output=True,
                         text=True, check=True, env=env).stdout
    return out.split("\n")[:-1]


# ---------------------------------------------------------------- the text form


def test_text_form_equals_the_authors_tools(tmp_path):
    lower = _authors_tool("lowercase_and_remove_accent.py")
    crafted = ["He said, \u2018Go.\u2019 It\u2018s \u201aodd\u2019 here.", "tab\tinside and zero\u200bwidth",
               "\u00abQu\u00e9?\u00bb \u2014 dijo \u00c1NGEL, 3,5 % \u2026"]
    for lang in LANGS:
        lines = verses(lang, 4000, 4300) + crafted
        theirs = perl_moses(lines, lang)
        cased = text_form.AuthorsTextForm(lang, lowercase=False)
        assert [cased.line(l) for l in lines] == theirs, lang
        lowered = text_form.AuthorsTextForm(lang, lowercase=True)
        assert [lowered.line(l) for l in lines] == authors_python(lower, theirs, tmp_path), lang
    # Thai: Moses' normalisation, then the authors' segment_th.py (PyThaiNLP)
    thai = ["สวัสดีครับ ผมชื่อสมชาย", "ประเทศไทยมีประชากรประมาณ 70 ล้านคน", "ภาษาไทยเป็นภาษาราชการ"]
    theirs = authors_python(_authors_tool("segment_th.py"), perl_moses(thai, "th", tokenize=False), tmp_path)
    form = text_form.AuthorsTextForm("th", lowercase=False)
    assert [form.line(l) for l in thai] == theirs and len(theirs[0].split()) >= 4
    # Chinese: jieba (no Stanford segmenter here: no oracle), then Moses' normalisation of the punctuation
    assert text_form.AuthorsTextForm("zh", False).line("我们在北京大学学习。") == "我们 在 北京大学 学习 ."


def test_tokenize_file_in_processes_keeps_the_order(tmp_path):
    src = tmp_path / "raw.es"
    lines = verses("es", 100, 2600)
    src.write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    assert text_form.tokenize_file(str(src), str(tmp_path / "two"), "es", True, workers=2) == len(lines)
    form = text_form.AuthorsTextForm("es", True)
    one = [form.line(l) for l in lines]  # chunks of 2000 lines: the second process's chunk comes second
    assert (tmp_path / "two").read_text(encoding="utf-8").splitlines() == one
    assert text_form.tokenize_file(str(src), str(tmp_path / "head"), "es", True, max_lines=7) == 7


# ---------------------------------------------------------------- the seeded split


def test_split_equals_shuf_with_openssl_seed(tmp_path):
    for tool in ("shuf", "openssl", "bash"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    n = 10_250
    sides = {}
    for lang in ("en", "es"):
        sides[lang] = tmp_path / f"all.{lang}"
        sides[lang].write_text("".join(l + "\n" for l in verses(lang, 0, n)), encoding="utf-8")
    # the authors' split_data (get-data-wiki.sh, get-data-para.sh), verbatim in its commands
    script = """
get_seeded_random() { seed="$1"; openssl enc -aes-256-ctr -pass pass:"$seed" -nosalt </dev/zero 2>/dev/null; };
NLINES=`wc -l $1 | awk -F " " '{print $1}'`; NTRAIN=$((NLINES - 10000)); NVAL=$((NTRAIN + 5000));
shuf --random-source=<(get_seeded_random 42) $1 | head -$NTRAIN > $2;
shuf --random-source=<(get_seeded_random 42) $1 | head -$NVAL | tail -5000 > $3;
shuf --random-source=<(get_seeded_random 42) $1 | tail -5000 > $4;
"""
    outs = {part: [str(tmp_path / f"{part}.{lang}") for lang in sides] for part in ("train", "valid", "test")}
    sizes = seeded_split.shuf_split([str(p) for p in sides.values()], outs)
    assert sizes == {"train": n - 10_000, "valid": 5000, "test": 5000}
    for lang, path in sides.items():
        theirs = [tmp_path / f"theirs.{part}.{lang}" for part in ("train", "valid", "test")]
        subprocess.run(["bash", "-c", script, "split_data", path, *theirs], check=True)
        for part, their in zip(("train", "valid", "test"), theirs):
            assert (tmp_path / f"{part}.{lang}").read_bytes() == their.read_bytes(), (lang, part)
    # the streaming split: disjoint, sized, every line once, sides still aligned
    souts = {part: [str(tmp_path / f"s{part}.{lang}") for lang in sides] for part in ("train", "valid", "test")}
    seeded_split.stream_split([str(p) for p in sides.values()], souts, size=1000)
    got = {part: [Path(p).read_text(encoding="utf-8").splitlines() for p in ps] for part, ps in souts.items()}
    assert [len(got[p][0]) for p in ("train", "valid", "test")] == [n - 2000, 1000, 1000]
    assert sorted(sum((got[p][0] for p in got), [])) == sorted(verses("en", 0, n))
    pairs = set(zip(verses("en", 0, n), verses("es", 0, n)))
    assert all(pair in pairs for p in got for pair in zip(*got[p]))
    with pytest.raises(seeded_split.SplitError, match=r"all.en: 10250 lines, not more than the 20500 held out"):
        seeded_split.shuf_split([str(sides["en"])], outs, size=10_250)


# ---------------------------------------------------------------- fastBPE


@pytest.fixture(scope="module")
def fastbpe_oracle(tmp_path_factory):
    """fastBPE's own learnbpe/getvocab, compiled from fastBPE.hpp of its PyPI sdist (skip without pip or g++)."""
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    out = tmp_path_factory.mktemp("fastbpe")
    got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
                          "fastBPE==0.1.0", "-d", str(out)], capture_output=True, text=True)
    sdist = out / "fastBPE-0.1.0.tar.gz"
    if got.returncode or not sdist.is_file():
        pytest.skip(f"could not download fastBPE's sdist: {got.stderr[-300:]}")
    with tarfile.open(sdist) as tar:
        tar.extract("fastBPE-0.1.0/fastBPE/fastBPE.hpp", out, filter="data")
    (out / "main.cc").write_text('#include "fastBPE.hpp"\nint main(int c, char **v) { std::string cmd = v[1];\n'
                                 '  if (cmd == "learnbpe") fastBPE::learnbpe(atoi(v[2]), v[3], c > 4 ? v[4] : "");\n'
                                 '  else fastBPE::getvocab(v[2], c > 3 ? v[3] : ""); }\n')
    subprocess.run(["g++", "-std=c++11", "-O1", "-pthread", "-I", out / "fastBPE-0.1.0" / "fastBPE", out / "main.cc",
                    "-o", out / "fast"], check=True)
    return out / "fast"


def test_learnbpe_getvocab_applybpe_equal_fastbpe(fastbpe_oracle, tmp_path):
    fastBPE = pytest.importorskip("fastBPE")
    files = []
    for lang in ("en", "es"):
        form = text_form.AuthorsTextForm(lang, True)
        files.append(tmp_path / f"tok.{lang}")
        files[-1].write_text("".join(form.line(l) + "\n" for l in verses(lang, 9000, 10500)), encoding="utf-8")
    merges = 1500
    theirs = subprocess.run([fastbpe_oracle, "learnbpe", str(merges), *files], capture_output=True, text=True,
                            check=True).stdout
    codes = fastbpe.learn_bpe([str(f) for f in files], merges)
    assert "".join(f"{a} {b} {c}\n" for a, b, c in codes) == theirs
    assert len({c for _, _, c in codes}) < merges / 3  # many ties: their order is fastBPE's
    vocab = subprocess.run([fastbpe_oracle, "getvocab", *files], capture_output=True, text=True, check=True).stdout
    assert "".join(f"{w} {c}\n" for w, c in fastbpe.get_vocab([str(f) for f in files])) == vocab
    # applybpe: ours against the pip package, without and with a vocabulary (fastBPE's limitVocab)
    fastbpe.write_codes(codes, str(tmp_path / "codes"))
    lines = files[1].read_text(encoding="utf-8").splitlines()[:400] + ["unseenword ñandú xyzzy"]
    bpe_vocab = fastbpe.get_vocab([str(files[0])])[:300]
    fastbpe.write_vocab(bpe_vocab, str(tmp_path / "vocab"))
    for vocab_path, vocab_dict in (("", None), (str(tmp_path / "vocab"), dict(bpe_vocab))):
        applier = fastBPE.fastBPE(str(tmp_path / "codes"), vocab_path) if vocab_path else \
            fastBPE.fastBPE(str(tmp_path / "codes"))
        ours = fastbpe.ApplyBpe(codes, vocab_dict)
        assert [ours.line(l) for l in lines] == applier.apply(lines)
