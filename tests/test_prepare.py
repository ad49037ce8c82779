"""fairseq_xlm.cli.bible and fairseq_xlm.cli.prepare: Bible slices, shared BPE sample, joined dict, data-bin."""

import logging
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import preload
import pytest
import sentencepiece as spm
from fairseq.data import Dictionary, data_utils

from fairseq_xlm.cli import bible, prepare, prepare_ids, prepare_stages
from fairseq_xlm.data import layout

from conftest import BIBLE_MONO, BIBLE_PARA, REPO, bible_tsv

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


def lines(path) -> list:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def prep(raw, dest, *extra, langs="en,es"):
    """Run prepare in-process (vocab 1000, small sample) and return its stage results."""
    return prepare.main(["--raw", str(raw), "--destdir", str(dest), "--langs", langs, "--vocab-size", "1000",
                         "--sample-lines", "4000", *map(str, extra)])


@pytest.fixture
def raw_copy(bible_raw, tmp_path):
    """A private copy of the session's raw Bible slice that a test may corrupt."""
    return Path(shutil.copytree(bible_raw, tmp_path / "raw"))


# ---------------------------------------------------------------- smoothing and the BPE sample


def _synthetic_raw(root: Path, sizes: dict) -> Path:
    """Languages with disjoint alphabets, so each sampled line tells its language; line k is unique."""
    root.mkdir()
    for lang, n in sizes.items():
        for split in ("train", "valid", "test"):
            count = n if split == "train" else 5
            text = "".join(f"{lang}{k} {lang * 3} {lang}{k % 7}\n" for k in range(count))
            (root / f"{split}.{lang}").write_text(text)
    return root


def test_sample_follows_smoothed_probs(tmp_path):
    raw = _synthetic_raw(tmp_path / "raw", {"aa": 9000, "bb": 1000})
    dest = tmp_path / "bin"
    dest.mkdir()
    cfg = prepare.PrepareConfig(raw=str(raw), destdir=str(dest), langs="aa,bb", sample_lines=4000, seed=3)
    corpora = prepare_stages.raw_inventory(cfg, ["aa", "bb"])
    counted = prepare_stages.check(cfg, corpora, ["aa", "bb"])["lines"]
    out = tmp_path / "sample.txt"
    result = prepare_stages.draw_sample(cfg, corpora, ["aa", "bb"], counted, str(out))
    assert result["probs"] == pytest.approx({"aa": 0.75, "bb": 0.25})  # p = 0.9/0.1 -> q = 0.75/0.25
    sample = lines(out)
    assert len(sample) == 4000
    n_bb = sum(line.startswith("bb") for line in sample)
    sd = math.sqrt(4000 * 0.25 * 0.75)  # binomial sd of the bb count, about 27
    assert abs(n_bb - 1000) < 4 * sd, n_bb  # unsmoothed shares would give 400
    # aa has 9000 lines for ~3000 draws: no line twice; bb's draws come from its own lines only
    aa = Counter(line for line in sample if line.startswith("aa"))
    assert max(aa.values()) == 1 and len(aa) == 4000 - n_bb
    assert set(line for line in sample if line.startswith("bb")) <= set(lines(raw / "train.bb"))


def test_sample_upsamples_low_resource_by_repetition(tmp_path):
    raw = _synthetic_raw(tmp_path / "raw", {"aa": 900, "bb": 100})
    cfg = prepare.PrepareConfig(raw=str(raw), destdir=str(tmp_path), langs="aa,bb", sample_lines=1000, seed=5)
    corpora = prepare_stages.raw_inventory(cfg, ["aa", "bb"])
    counted = prepare_stages.check(cfg, corpora, ["aa", "bb"])["lines"]
    prepare_stages.draw_sample(cfg, corpora, ["aa", "bb"], counted, str(tmp_path / "s.txt"))
    bb = Counter(line for line in lines(tmp_path / "s.txt") if line.startswith("bb"))
    n_bb = sum(bb.values())
    assert abs(n_bb - 250) < 4 * math.sqrt(1000 * 0.25 * 0.75)
    # ~250 draws from 100 lines: every line twice, some three times (whole copies, then the remainder)
    assert len(bb) == 100 and set(bb.values()) <= {n_bb // 100, n_bb // 100 + 1}


def test_parallel_sides_count_for_their_language(tmp_path):
    corpora = {"train.en": ["train.en"], "train.en-es": ["train.en-es.en", "train.en-es.es"],
               "valid.en": ["valid.en"]}
    assert prepare_stages.train_files(corpora, "en") == ["train.en", "train.en-es.en"]
    assert prepare_stages.train_files(corpora, "es") == ["train.en-es.es"]


# ---------------------------------------------------------------- the Bible slice


def test_genres_by_book_number():
    expected = {1: "Law", 5: "Law", 6: "History", 17: "History", 18: "Poetry", 22: "Poetry", 23: "Prophets",
                39: "Prophets", 40: "Gospels", 43: "Gospels", 44: "Acts", 45: "Letters", 65: "Letters",
                66: "Revelation"}
    assert {b: bible.genre(b) for b in expected} == expected
    with pytest.raises(ValueError):
        bible.genre(67)


def _chapters(path) -> set:
    return {".".join(i.split(".")[:2]) for i in lines(path)}


def test_bible_slice_splits_by_chapter(bible_raw):
    for split, n in BIBLE_MONO.items():
        for lang in ("en", "es"):
            assert len(lines(bible_raw / f"{split}.{lang}")) == n
            labels = lines(bible_raw / f"{split}.{lang}.label")
            ids = lines(bible_raw / f"{split}.{lang}.id")
            assert labels == [bible.genre(int(i[:2])) for i in ids]
        for lang in ("en", "es"):
            assert len(lines(bible_raw / f"{split}.en-es.{lang}")) == BIBLE_PARA[split]
    held_out = {s: _chapters(bible_raw / f"{s}.en.id") | _chapters(bible_raw / f"{s}.en-es.id")
                for s in ("train", "valid", "test")}
    assert not held_out["train"] & held_out["valid"]
    assert not held_out["train"] & held_out["test"]
    assert not held_out["valid"] & held_out["test"]
    assert len(set(lines(bible_raw / "train.en.label"))) >= 4  # a small slice still spans several genres
    # the texts are the corpus' own lines for those ids
    rows = {v.id: v for v in bible.read_tsv(str(bible_tsv()), ["en", "es"])}
    ids = lines(bible_raw / "valid.en-es.id")
    assert lines(bible_raw / "valid.en-es.es") == [rows[i].text["es"] for i in ids]


def test_bible_disjoint_flags(tmp_path):
    out = tmp_path / "raw"
    bible.main(["--tsv", str(bible_tsv()), "--out", str(out), "--langs", "en,es", "--pairs", "en-es", "--ids",
                "--split-by", "book", "--valid-frac", "0.1", "--test-frac", "0.1", "--train-verses", "300",
                "--para-train-verses", "200", "--valid-verses", "20", "--test-verses", "20",
                "--para-valid-verses", "20", "--para-test-verses", "20", "--disjoint-para", "--disjoint-mono"])
    en, es, para = (_chapters(out / f"train.{n}.id") for n in ("en", "es", "en-es"))
    books = [{c.split(".")[0] for c in s} for s in (en, es, para)]
    assert not books[0] & books[1] and not books[0] & books[2] and not books[1] & books[2]
    assert len(lines(out / "train.en")) == 300 and len(lines(out / "train.en-es.es")) == 200
    test_books = {i.split(".")[0] for i in lines(out / "test.en.id")}
    assert not test_books & (books[0] | books[1] | books[2])


def test_bible_bad_input(tmp_path):
    with pytest.raises(SystemExit, match="not found"):
        bible.main(["--tsv", str(tmp_path / "none.tsv.gz"), "--out", str(tmp_path), "--langs", "en"])
    with pytest.raises(SystemExit, match=r"lacks column\(s\) \['fr'\]"):
        bible.main(["--tsv", str(bible_tsv()), "--out", str(tmp_path), "--langs", "fr"])
    with pytest.raises(SystemExit, match="unknown chapter"):
        bible.main(["--tsv", str(bible_tsv()), "--out", str(tmp_path), "--langs", "en", "--valid-units", "99.1"])


# ---------------------------------------------------------------- the data-bin


def test_databin_layout_and_line_counts(bible_databin, bible_raw):
    names = sorted(os.listdir(bible_databin))
    assert not [n for n in names if "None" in n or ".tmp" in n]
    assert {"dict.txt", "spm.model", "spm.vocab"} <= set(names)
    assert layout.available(str(bible_databin), "train") == (["en", "es"], ["en-es"])
    d = layout.load_dictionary(str(bible_databin))
    for split in ("train", "valid", "test"):
        prefixes = {f"{split}.{lang}": f"{split}.{lang}" for lang in ("en", "es")}
        prefixes.update({f"{split}.en-es.{lang}": f"{split}.en-es.{lang}" for lang in ("en", "es")})
        for prefix, raw_name in prefixes.items():
            for ext in ("bin", "idx"):
                assert (bible_databin / f"{prefix}.{ext}").is_file(), prefix
            ds = data_utils.load_indexed_dataset(str(bible_databin / prefix), d)
            assert len(ds) == len(lines(bible_raw / raw_name)), prefix
            assert all(int(ds[i][-1]) == d.eos() for i in (0, len(ds) - 1))
        assert lines(bible_databin / f"{split}.en.label") == lines(bible_raw / f"{split}.en.label")


def test_binarized_text_decodes_to_the_raw_text(bible_databin, bible_raw):
    d = layout.load_dictionary(str(bible_databin))
    sp = spm.SentencePieceProcessor(model_file=str(bible_databin / "spm.model"))
    for prefix in ("valid.es", "train.en-es.en"):
        ds = data_utils.load_indexed_dataset(str(bible_databin / prefix), d)
        raw = lines(bible_raw / prefix)
        for i in range(0, len(ds), 7):
            pieces = [d[t] for t in ds[i][:-1].tolist()]
            assert sp.decode_pieces(pieces) == raw[i]


def test_dictionary_is_joined_without_mask(bible_databin):
    text = (bible_databin / "dict.txt").read_text(encoding="utf-8")
    sp = spm.SentencePieceProcessor(model_file=str(bible_databin / "spm.model"))
    symbols = [line.split(" ")[0] for line in text.splitlines()]
    assert "<mask>" not in symbols and not [s for s in symbols if s.startswith("madeupword")]
    assert not set(SPECIALS) & set(symbols)  # fairseq adds its specials itself
    pieces = {sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not sp.is_unknown(i)}
    assert set(symbols) == pieces and len(symbols) == len(pieces)  # one vocabulary: the spm model's
    counts = [int(line.split(" ")[1]) for line in text.splitlines()]
    assert counts == sorted(counts, reverse=True)
    # joined: pieces seen only in English and only in Spanish text are both in the one dictionary
    en, es = ({sp.id_to_piece(int(i)) for i in prepare_ids.read_tokens(str(bible_databin / f"prep/ids/train.{lang}"))[0]}
              for lang in ("en", "es"))
    en_only, es_only = en - es, es - en
    assert min(len(en_only), len(es_only)) > 50
    assert en_only | es_only <= set(symbols)
    # tasks append <mask> after the pieces: one more symbol, at the end
    d = layout.load_dictionary(str(bible_databin))
    assert len(d) == len(symbols) + 5 and d.index("<mask>") == len(d) - 1
    assert Dictionary.load(str(bible_databin / "dict.txt")).symbols[:4] == SPECIALS


def test_spm_round_trips_raw_text(bible_databin, bible_raw):
    sp = spm.SentencePieceProcessor(model_file=str(bible_databin / "spm.model"))
    for name in ("train.en", "train.es", "test.es", "valid.en-es.es"):
        raw = lines(bible_raw / name)
        encoded = sp.encode(raw)
        tokens, sizes = prepare_ids.read_tokens(str(bible_databin / "prep" / "ids" / name))
        assert [x.tolist() for x in np.split(np.asarray(tokens), np.cumsum(sizes)[:-1])] == encoded
        # character coverage 1.0: every training character is known; held-out text may hold a rare one
        known = [i for i, ids in enumerate(encoded) if sp.unk_id() not in ids]
        assert len(known) == len(raw) if name.startswith("train") else len(known) > 0.95 * len(raw)
        assert [sp.decode(encoded[i]) for i in known] == [raw[i] for i in known]


# ---------------------------------------------------------------- re-running, crashes


def _mtimes(root: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in root.iterdir() if p.is_file()}


def _ran(caplog) -> list:
    return [r.getMessage().split()[1].rstrip(":") for r in caplog.records if r.getMessage().endswith(": running")]


def test_second_run_skips_every_stage(raw_copy, tmp_path, caplog):
    dest = tmp_path / "bin"
    prep(raw_copy, dest)
    before = _mtimes(dest)
    with caplog.at_level(logging.INFO, logger="fairseq_xlm.cli.prepare"):
        prep(raw_copy, dest)
    skipped = [r.getMessage() for r in caplog.records if "done already, skipping" in r.getMessage()]
    assert len(skipped) == len(prepare.STAGES)
    assert _mtimes(dest) == before
    # a new vocabulary size redoes spm and what follows, not check/sample
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fairseq_xlm.cli.prepare"):
        prep(raw_copy, dest, "--vocab-size", "900")
    assert _ran(caplog) == ["spm", "encode", "dict", "binarize", "manifest"]
    assert len(Dictionary.load(str(dest / "dict.txt"))) == 4 + 899
    # changed raw text redoes everything
    for name, line in (("valid.es", "Una línea más."), ("valid.es.label", "Acts")):
        with open(raw_copy / name, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fairseq_xlm.cli.prepare"):
        prep(raw_copy, dest, "--vocab-size", "900")
    assert _ran(caplog) == list(prepare.STAGES)
    assert len(data_utils.load_indexed_dataset(str(dest / "valid.es"), None)) == 81
    assert lines(dest / "valid.es.label")[-1] == "Acts"


def test_crash_leaves_no_partial_output_and_rerun_finishes(bible_raw, tmp_path, monkeypatch):
    dest = tmp_path / "bin"
    real = prepare_ids.TokenWriter.add
    calls = []

    def crash_second_output(self, tokens, sizes):
        if Path(self.tmp_idx).parent == dest:  # binarize's writers (encode's write to prep/ids)
            calls.append(self.tmp_idx)
            if len(set(calls)) == 2:  # half of the second data-bin file written, then killed
                self.bin.write(b"\0" * 10)
                raise KeyboardInterrupt("simulated crash")
        return real(self, tokens, sizes)

    monkeypatch.setattr(prepare_ids.TokenWriter, "add", crash_second_output)
    with pytest.raises(KeyboardInterrupt):
        prep(bible_raw, dest)
    leftovers = [p for p in dest.rglob("*") if ".tmp" in p.name or "None" in p.name]
    assert not leftovers
    assert not (dest / "prep" / "binarize.done").exists() and (dest / "prep" / "dict.done").exists()
    assert (dest / "test.en.bin").is_file() and not list(dest.glob("test.en-es.*"))  # the crashed file: nothing

    # crash inside encode: no ids file is half-written
    monkeypatch.setattr(prepare_ids.TokenWriter, "add", real)

    def broken_batches(rows, size):
        yield 0, [next(iter(rows))]
        raise OSError("disk full")

    monkeypatch.setattr(prepare_ids, "batches", broken_batches)
    with pytest.raises(OSError):
        prep(bible_raw, dest, "--max-line-tokens", "500")  # changed setting: encode reruns and crashes
    assert not (dest / "prep" / "encode.done").exists()
    assert not [p for p in dest.rglob("*") if ".tmp" in p.name]

    monkeypatch.undo()
    prep(bible_raw, dest)
    clean = tmp_path / "clean"
    prep(bible_raw, clean)
    for name in ("dict.txt", "train.en-es.es.bin", "train.en.idx", "test.es.bin"):
        assert (dest / name).read_bytes() == (clean / name).read_bytes(), name


# ---------------------------------------------------------------- bad input


def test_missing_train_file(raw_copy, tmp_path):
    with pytest.raises(SystemExit, match=r"train\.ny: missing"):
        prep(raw_copy, tmp_path / "bin", langs="en,es,ny")


def test_missing_valid_split_stops_unless_optional(raw_copy, tmp_path):
    (raw_copy / "valid.es").unlink()
    with pytest.raises(SystemExit, match=r"valid\.es: missing.*--valid-optional"):
        prep(raw_copy, tmp_path / "bin")
    assert not (tmp_path / "bin" / "dict.txt").exists()
    out = prep(raw_copy, tmp_path / "bin", "--valid-optional")
    assert "valid.es" not in out["check"]["lines"] and "valid.en" in out["check"]["lines"]


def test_empty_split(raw_copy, tmp_path):
    (raw_copy / "valid.es").write_text("\n  \n")
    with pytest.raises(SystemExit, match=r"valid\.es: empty split"):
        prep(raw_copy, tmp_path / "bin")


def test_not_utf8_names_file_and_line(raw_copy, tmp_path):
    with open(raw_copy / "train.es", "ab") as f:
        f.write("canción\n".encode("latin-1"))
    with pytest.raises(SystemExit, match=r"train\.es:601: not UTF-8"):
        prep(raw_copy, tmp_path / "bin")


def test_misaligned_parallel_and_labels(raw_copy, tmp_path):
    with open(raw_copy / "test.en-es.es", "a", encoding="utf-8") as f:
        f.write("una de más\n")
    with pytest.raises(SystemExit, match=r"test\.en-es\.es: 61 lines but test\.en-es\.en has 60"):
        prep(raw_copy, tmp_path / "bin")
    (raw_copy / "test.en-es.es").unlink()
    with pytest.raises(SystemExit, match=r"test\.en-es\.es: missing, the other side"):
        prep(raw_copy, tmp_path / "bin")
    (raw_copy / "test.en-es.en").unlink()
    (raw_copy / "valid.en.label").write_text("Law\n")
    with pytest.raises(SystemExit, match=r"valid\.en\.label: 1 labels for 80 lines"):
        prep(raw_copy, tmp_path / "bin")


def test_bad_flags(raw_copy, tmp_path):
    with pytest.raises(SystemExit, match="--vocab-size must be > 0"):
        prep(raw_copy, tmp_path / "bin", "--vocab-size", "0")
    with pytest.raises(SystemExit, match="--langs names a language twice|names a language twice"):
        prep(raw_copy, tmp_path / "bin", langs="en,en")
    with pytest.raises(SystemExit, match="no such folder"):
        prep(tmp_path / "nowhere", tmp_path / "bin")


def test_long_lines_warned_or_dropped(raw_copy, tmp_path, caplog):
    long_en = " ".join(["In the beginning God created the heavens and the earth."] * 40)
    with open(raw_copy / "train.en", "a", encoding="utf-8") as f:
        f.write(long_en + "\n")
    with open(raw_copy / "train.en.label", "a", encoding="utf-8") as f:
        f.write("Law\n")
    for side, text in (("en", long_en), ("es", "En el principio.")):
        with open(raw_copy / f"train.en-es.{side}", "a", encoding="utf-8") as f:
            f.write(text + "\n")
    with caplog.at_level(logging.WARNING, logger="fairseq_xlm.cli.prepare"):
        prep(raw_copy, tmp_path / "keep", "--warn-line-tokens", "300")
    warnings = [r.getMessage() for r in caplog.records if "--warn-line-tokens" in r.getMessage()]
    assert len(warnings) == 2 and all("1 line(s) longer than" in w for w in warnings)
    assert "first: line 601" in warnings[1] or "first: line 601" in warnings[0]
    d = layout.load_dictionary(str(tmp_path / "keep"))
    assert len(data_utils.load_indexed_dataset(str(tmp_path / "keep" / "train.en"), d)) == 601

    dropped = tmp_path / "drop"
    prep(raw_copy, dropped, "--max-line-tokens", "300")
    for prefix, n in (("train.en", 600), ("train.en-es.en", 300), ("train.en-es.es", 300)):
        assert len(data_utils.load_indexed_dataset(str(dropped / prefix), d)) == n, prefix
    assert len(lines(dropped / "train.en.label")) == 600


def test_cli_exit_code_and_message(raw_copy, tmp_path, run_fairseq):
    import subprocess

    cmd = [preload.python(), "-m", "fairseq_xlm.cli.prepare", "--raw", str(raw_copy), "--destdir", str(tmp_path / "b"),
           "--langs", "en,xx"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 1
    assert f"error: {raw_copy / 'train.xx'}: missing" in proc.stderr and "Traceback" not in proc.stderr


def test_recipe_usage_and_stage_gates(bible_raw, tmp_path):
    import subprocess

    bad = subprocess.run(["bash", str(REPO / "recipes/prepare_pretrain.sh")], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage:" in bad.stderr
    bad = subprocess.run(["bash", str(REPO / "recipes/prepare_bible.sh"), "--nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage:" in bad.stderr
    # stage 1 only (list the inputs): no data-bin is made
    env = dict(os.environ, PYTHON=preload.python(), DATABIN=str(tmp_path / "bin"))
    ok = subprocess.run(["bash", str(REPO / "recipes/prepare_pretrain.sh"), "--stop-stage", "1", str(bible_raw)],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "Stage 1" in ok.stdout and "Stage 2" not in ok.stdout and not (tmp_path / "bin").exists()


def test_prepare_bible_recipe_end_to_end(tmp_path):
    import subprocess

    env = dict(os.environ, PYTHON=preload.python(), RAW=str(tmp_path / "raw"), DATABIN=str(tmp_path / "bin"),
               LANGS="en,es", PAIRS="en-es", VOCAB="500", SAMPLE_LINES="2000", MONO_VERSES="200,30,30",
               PARA_VERSES="100,20,20", TSV=str(bible_tsv()))
    recipe = str(REPO / "recipes/prepare_bible.sh")
    run = subprocess.run(["bash", recipe], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    d = layout.load_dictionary(str(tmp_path / "bin"))
    assert len(d) == 4 + 499 + 1
    assert len(data_utils.load_indexed_dataset(str(tmp_path / "bin" / "valid.en-es.es"), d)) == 20
    again = subprocess.run(["bash", recipe, "--stop-stage", "1"], capture_output=True, text=True, env=env)
    assert again.returncode == 0 and "exists, skipping" in again.stdout
