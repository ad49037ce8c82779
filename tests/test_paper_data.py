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

from authors_release import perl_moses
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
    for lang in ("en", "es"):
        lines = verses(lang, 4000, 4150) + crafted
        theirs = perl_moses(lines, lang)
        mine = [text_form.AuthorsTextForm(lang, lowercase=False).line(l) for l in lines]
        assert mine == theirs, lang
        lowered = [text_form.lowercase_and_remove_accent(line) for line in mine]  # what lowercase=True appends
        assert lowered == authors_python(lower, theirs, tmp_path), lang
    assert text_form.AuthorsTextForm("es", lowercase=True).line(lines[-1]) == lowered[-1]
    # Thai: Moses' normalisation, then the authors' segment_th.py (PyThaiNLP)
    thai = ["สวัสดีครับ ผมชื่อสมชาย", "ประเทศไทยมีประชากรประมาณ 70 ล้านคน", "ภาษาไทยเป็นภาษาราชการ"]
    theirs = authors_python(_authors_tool("segment_th.py"), perl_moses(thai, "th", tokenize=False), tmp_path)
    form = text_form.AuthorsTextForm("th", lowercase=False)
    assert [form.line(l) for l in thai] == theirs and len(theirs[0].split()) >= 4
    # Chinese: jieba (no Stanford segmenter here: no oracle), then Moses' normalisation of the punctuation
    assert text_form.AuthorsTextForm("zh", False).line("我们在北京大学学习。") == "我们 在 北京大学 学习 ."


def test_tokenize_file_in_processes_keeps_the_order(tmp_path, monkeypatch):
    monkeypatch.setattr(text_form, "CHUNK_LINES", 40)  # 8 chunks over 2 processes (forked: they see it too)
    src = tmp_path / "raw.es"
    lines = verses("es", 100, 420)
    src.write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    assert text_form.tokenize_file(str(src), str(tmp_path / "two"), "es", True, workers=2) == len(lines)
    form = text_form.AuthorsTextForm("es", True)
    one = [form.line(l) for l in lines]
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
    subprocess.run(["g++", "-std=c++11", "-O0", "-pthread", "-I", out / "fastBPE-0.1.0" / "fastBPE", out / "main.cc",
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


# ---------------------------------------------------------------- part A's layout -> data-bin -> training

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def acquired(out: Path) -> Path:
    """Files in part A's layout (fairseq_xlm.acquire): Wikipedia text of en and es (real verses), a parallel
    corpus en-es, and XNLI as prepare_xnli extract writes it."""
    from fairseq_xlm.cli import prepare_xnli

    (out / "wiki").mkdir(parents=True)
    (out / "para").mkdir()
    for lang, start in (("en", 0), ("es", 700)):
        (out / "wiki" / f"{lang}.txt").write_text("".join(l + "\n" for l in verses(lang, start, start + 600)),
                                                   encoding="utf-8")
        (out / "para" / f"Bible.en-es.{lang}").write_text(
            "".join(l + "\n" for l in verses(lang, 2000, 2300)), encoding="utf-8")
    prepare_xnli.main(["extract", "--out", str(out / "xnli"), "--langs", "en,es", "--xnli-dir",
                       str(FIXTURES / "xnli"), "--mnli-train", str(FIXTURES / "xnli" / "multinli_1.0_train.jsonl")])
    return out


def paper_args(acq: Path, dest: Path):
    return ["xnli15", "--acquired", str(acq), "--destdir", str(dest), "--langs", "en,es", "--codes", "800",
            "--held-out", "60"]


@pytest.fixture(scope="module")
def paper_bin(tmp_path_factory):
    """prepare_paper xnli15 (en, es) on ``acquired`` files: (acquired folder, data-bin)."""
    acq = acquired(tmp_path_factory.mktemp("acquired"))
    dest = tmp_path_factory.mktemp("paper_bin")
    prepare_paper.main(paper_args(acq, dest))
    return acq, dest


def _databin_bytes(folder: Path):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "prep" not in p.relative_to(folder).parts}


def test_acquired_layout_to_databin_then_xlm_pretrain_trains(paper_bin, pkg_dir, run_fairseq, tmp_path):
    acq, dest = paper_bin
    text = dest / "prep" / "paper" / "text"
    # the authors' split of 600 lines: 480 / 60 / 60; the pair's too; everything lowercased Moses text
    assert [len((text / f"{s}.en").read_text(encoding="utf-8").splitlines()) for s in ("train", "valid", "test")] \
        == [480, 60, 60]
    assert len((text / "valid.en-es.es").read_text(encoding="utf-8").splitlines()) == 60
    first = (text / "train.es").read_text(encoding="utf-8").splitlines()[0]
    assert first == first.lower() and " , " in (text / "train.es").read_text(encoding="utf-8")
    codes = (dest / "prep" / "paper" / "codes").read_text(encoding="utf-8").splitlines()
    assert len(codes) == 800 and codes == [f"{a} {b} {c}" for a, b, c in fastbpe.learn_bpe(
        [str(dest / "prep" / "paper" / "bpe_text.txt")], 800)]
    # dict.txt is the vocabulary: every piece of the training text, nothing else
    from fairseq.data import Dictionary, data_utils

    d = Dictionary.load(str(dest / "dict.txt"))
    vocab = (dest / "prep" / "paper" / "vocab").read_text(encoding="utf-8").splitlines()
    assert d.symbols[d.nspecial:] == [line.split(" ")[0] for line in vocab]
    train = data_utils.load_indexed_dataset(str(dest / "train.en-es.es"), d, "mmap")
    assert len(train) == 180 and all(int((train[i] == d.unk()).sum()) == 0 for i in range(len(train)))
    assert (dest / "xnli" / "train.en.input0.bin").is_file() and (dest / "manifest.json").is_file()
    save = tmp_path / "ckpt"
    out = run_fairseq("fairseq_cli.train", [
        dest, "--user-dir", pkg_dir, "--task", "xlm_pretrain", "--arch", "xlm_tiny", "--criterion", "xlm_lm",
        "--langs", "en,es", "--mlm-steps", "en,es,en-es", "--optimizer", "adam", "--lr", "1e-3", "--batch-size",
        "4", "--tokens-per-sample", "64", "--cpu", "--num-workers", "0", "--log-interval", "1", "--save-dir", save,
        "--no-epoch-checkpoints", "--seed", "3", "--max-update", "2", "--disable-validation"]).stdout
    import re

    assert [float(v) for v in re.findall(r"[ ,|]num_updates[= ]([0-9.]+)", out)][-1] == 2
    assert (save / "checkpoint_last.pt").is_file()
    # our sentencepiece, trained on the same language mix
    import sentencepiece as spm

    prepare.main(["--raw", str(text), "--destdir", str(tmp_path / "spm"), "--langs", "en,es", "--vocab-size", "400",
                  "--sample-file", str(dest / "prep" / "paper" / "bpe_text.txt")])
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = pb.ModelProto.FromString((tmp_path / "spm" / "spm.model").read_bytes())
    assert list(model.trainer_spec.input) == [str(dest / "prep" / "paper" / "bpe_text.txt")]
    assert spm.SentencePieceProcessor(model_file=str(tmp_path / "spm" / "spm.model")).get_piece_size() == 400


def _run_killed(argv, stage):
    """prepare_paper in a forked child killed (SIGKILL) at ``stage``'s crash point; its exit status."""
    import multiprocessing

    def child():
        os.environ[CRASH_ENV] = stage
        prepare_paper.main(argv)

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join()
    return proc.exitcode


def test_a_kill_in_every_stage_then_a_restart_gives_the_same_bytes(paper_bin, tmp_path):
    acq, reference = paper_bin
    dest = tmp_path / "bin"
    argv = paper_args(acq, dest)
    # each run dies in the next stage (its .tmp output half-written); the first stages are done by then
    for stage in ("tokenize", "split", "learnbpe", "getvocab", "encode", "binarize"):
        assert _run_killed(argv, stage) == -signal.SIGKILL, stage
    assert not (dest / "manifest.json").exists()
    prepare_paper.main(argv)
    assert _databin_bytes(dest) == _databin_bytes(reference)


def test_bad_input_names_the_file_or_flag(paper_bin, tmp_path):
    acq, _ = paper_bin
    with pytest.raises(SystemExit, match=r"--langs: 'english' is not a language code"):
        prepare_paper.main(["xnli15", "--acquired", str(acq), "--destdir", str(tmp_path / "a"), "--langs", "en,english"])
    with pytest.raises(SystemExit, match=r"--langs: 'ja' is not a language of xnli15"):
        prepare_paper.main(["xnli15", "--acquired", str(acq), "--destdir", str(tmp_path / "a"), "--langs", "en,ja"])
    with pytest.raises(SystemExit, match=r"experiment 'xnli16': choose one of xnli15, umt-enfr"):
        prepare_paper.main(["xnli16", "--acquired", str(acq), "--destdir", str(tmp_path / "a")])
    with pytest.raises(SystemExit, match=r"wiki/fr.txt: missing; fetch it with python -m fairseq_xlm.cli.get_data"):
        prepare_paper.main(["xnli15", "--acquired", str(acq), "--destdir", str(tmp_path / "a"), "--langs", "en,fr"])
    empty = tmp_path / "empty"
    shutil.copytree(acq, empty)
    (empty / "wiki" / "es.txt").write_text("")
    with pytest.raises(SystemExit, match=r"empty/wiki/es.txt: empty file"):
        prepare_paper.main(paper_args(empty, tmp_path / "b"))
    (empty / "wiki" / "es.txt").write_bytes(b"hola\n\xff\xfe mundo\n")
    with pytest.raises(SystemExit, match=r"empty/wiki/es.txt:2: not UTF-8 text"):
        prepare_paper.main(paper_args(empty, tmp_path / "c"))
