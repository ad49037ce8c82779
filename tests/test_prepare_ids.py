"""cli/prepare_ids (sentencepiece ids -> data-bin without text) against the text path it replaced: pieces written
as text, counted with str.split into fairseq's Dictionary, binarized by fairseq-preprocess. Every .bin, .idx,
label file and dict.txt must be the same bytes."""

import contextlib
import dataclasses
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch
from fairseq.data import Dictionary
from fairseq.data.indexed_dataset import MMapIndexedDataset, MMapIndexedDatasetBuilder

from fairseq_xlm.cli import prepare, prepare_ids, prepare_stages
from fairseq_xlm.cli.prepare_authors import binarize_text, encode_text


def _raw_with_odd_text(bible_raw, root: Path) -> Path:
    """bible_raw plus pair lines with U+0085 (a piece that str.split drops: it is whitespace to Python, a
    character to sentencepiece), characters the BPE never saw (<unk>) and an empty line."""
    raw = Path(shutil.copytree(bible_raw, root))
    odd = {"train": ["Nel\x85here and\x85 there", "x\x85y\x85\x85z", ""], "valid": ["Snow ☃ and 漢字 here", ""]}
    for split, extra in odd.items():
        for side in ("en", "es"):
            with open(raw / f"{split}.en-es.{side}", "a", encoding="utf-8") as f:
                f.writelines(line + "\n" for line in extra)
    return raw


def _text_path(cfg: prepare.PrepareConfig, oracle: Path) -> Path:
    """The former sentencepiece path into ``oracle``: text pieces, Counter over str.split, fairseq-preprocess."""
    oracle.mkdir()
    shutil.copy(Path(cfg.destdir) / "spm.model", oracle / "spm.model")
    cfg = dataclasses.replace(cfg, destdir=str(oracle))
    corpora = prepare_stages.raw_inventory(cfg, cfg.langs.split(","))
    work = oracle / "prep"
    work.mkdir()
    encode_text(cfg, corpora, str(work))
    counts = Counter()
    for name, files in corpora.items():
        for file in files if name.startswith("train.") else []:
            counts.update(w for line in open(work / "bpe" / file, encoding="utf-8") for w in line.split())
    sp = spm.SentencePieceProcessor(model_file=str(oracle / "spm.model"))
    d = Dictionary()
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if not (sp.is_control(i) or sp.is_unknown(i) or piece in prepare_stages.RESERVED):
            d.add_symbol(piece, n=counts[piece])
    d.finalize(threshold=-1, nwords=-1, padding_factor=1)
    d.save(str(oracle / "dict.txt"))
    binarize_text(cfg, corpora, str(work))
    return oracle


def _same_files(ours: Path, oracle: Path) -> list:
    names = sorted(p.name for p in oracle.iterdir() if p.suffix in (".bin", ".idx", ".label") or p.name == "dict.txt")
    assert sorted(p.name for p in ours.iterdir() if p.suffix in (".bin", ".idx", ".label")
                  or p.name == "dict.txt") == names
    for name in names:
        assert (ours / name).read_bytes() == (oracle / name).read_bytes(), name
    return names


@pytest.mark.parametrize("workers,extra", [(1, []), (2, ["--max-line-tokens", "60"])])
def test_same_bytes_as_fairseq_preprocess(bible_raw, tmp_path, workers, extra):
    raw = _raw_with_odd_text(bible_raw, tmp_path / "raw")
    dest = tmp_path / "ours"
    out = prepare.main(["--raw", str(raw), "--destdir", str(dest), "--langs", "en,es", "--vocab-size", "1000",
                        "--sample-lines", "4000", "--workers", str(workers), *extra])
    cfg = prepare.PrepareConfig(raw=str(raw), destdir=str(dest), langs="en,es", workers=workers,
                                max_line_tokens=int(extra[1]) if extra else 0)
    names = _same_files(dest, _text_path(cfg, tmp_path / "oracle"))
    assert len(names) == 1 + 12 * 2 + 6  # dict.txt, 12 datasets, 6 label files
    lookup = prepare_ids.Lookup(prepare_ids._pieces(prepare_ids._processor(cfg)), Dictionary.load(str(dest / "dict.txt")))
    assert not lookup.one_to_one  # the U+0085 piece was learnt: the uneven mapping was exercised
    stats = out["encode"]["stats"]
    assert stats["valid.en-es"]["unk"] > 0 and stats["train.en-es"]["lines"] + stats["train.en-es"]["dropped"] == 303
    if extra:
        assert stats["train.en"]["dropped"] > 0  # the filter ran and agreed with the text path's


def test_shards_same_bytes_as_fairseq_preprocess(bible_raw, tmp_path):
    dest = tmp_path / "ours"
    prepare.main(["--raw", str(bible_raw), "--destdir", str(dest), "--langs", "en,es", "--vocab-size", "1000",
                  "--sample-lines", "4000", "--shards", "3"])
    cfg = prepare.PrepareConfig(raw=str(bible_raw), destdir=str(dest), langs="en,es")
    oracle = _text_path(cfg, tmp_path / "oracle")  # whole files; its shards: the same line slices of the text
    corpora = prepare_stages.raw_inventory(cfg, ["en", "es"])
    for shard in range(3):
        mine = {k: v for k, v in corpora.items() if k.startswith("train.") or shard == 0}
        work = tmp_path / f"o{shard}" / "prep"
        (work / "bpe").mkdir(parents=True)
        for corpus, files in mine.items():
            for file in files + ([f"{corpus}.label"] if (oracle / "prep" / "bpe" / f"{corpus}.label").exists() else []):
                text = (oracle / "prep" / "bpe" / file).read_text(encoding="utf-8").splitlines(keepends=True)
                lo, hi = (len(text) * shard // 3, len(text) * (shard + 1) // 3) if corpus.startswith("train.") else (
                    0, len(text))
                (work / "bpe" / file).write_text("".join(text[lo:hi]), encoding="utf-8")
        shutil.copy(oracle / "dict.txt", work.parent / "dict.txt")
        binarize_text(dataclasses.replace(cfg, destdir=str(work.parent)), mine, str(work))
        names = _same_files(dest / f"shard{shard}", work.parent)
        assert len(names) == (1 + 12 * 2 + 6 if shard == 0 else 1 + 4 * 2 + 2), names  # valid/test in shard 0


# ---------------------------------------------------------------- the pieces, by hand


def test_token_writer_bytes_equal_fairseq_builder(tmp_path):
    rng = np.random.default_rng(0)
    for dtype, high in ((np.uint16, 8000), (np.int32, 70000)):
        sizes = np.array([3, 0, 5, 1, 7], np.int64)
        tokens = rng.integers(0, high, int(sizes.sum()))
        builder = MMapIndexedDatasetBuilder(str(tmp_path / "theirs.bin"), dtype=dtype)
        for sentence in np.split(tokens, np.cumsum(sizes)[:-1]):
            builder.add_item(torch.from_numpy(sentence))
        builder.finalize(str(tmp_path / "theirs.idx"))
        with contextlib.ExitStack() as stack:  # two adds: batches append
            writer = prepare_ids.TokenWriter(stack, str(tmp_path / "ours"), dtype)
            writer.add(tokens[:8], sizes[:3])
            writer.add(tokens[8:], sizes[3:])
        for ext in ("bin", "idx"):
            assert (tmp_path / f"ours.{ext}").read_bytes() == (tmp_path / f"theirs.{ext}").read_bytes(), (dtype, ext)
        back, back_sizes = prepare_ids.read_tokens(str(tmp_path / "ours"))
        assert back.tolist() == tokens.tolist() and back_sizes.tolist() == sizes.tolist()
        assert MMapIndexedDataset(str(tmp_path / "ours"))[4].tolist() == tokens[9:].tolist()


def test_lookup_maps_whitespace_pieces_like_str_split():
    d = Dictionary()
    for w in ("a", "b", "c"):
        d.add_symbol(w)
    a, b, c, unk = d.index("a"), d.index("b"), d.index("c"), d.unk()
    lookup = prepare_ids.Lookup(["a", "b\x85c", "\x85", "zz"], d)  # one, two, zero words; unknown word
    assert not lookup.one_to_one
    ids, sizes = lookup.expand(np.array([0, 1, 2, 3, 2, 0]), np.array([2, 0, 2, 2]))
    # sentences [a, b\x85c], [], [\x85, zz], [\x85, a] -> [a, b, c], [], [unk], [a]
    assert ids.tolist() == [a, b, c, unk, a] and sizes.tolist() == [3, 0, 1, 1]
    ids, sizes = prepare_ids._with_eos(ids, sizes, 2)
    assert ids.tolist() == [a, b, c, 2, 2, unk, 2, a, 2] and sizes.tolist() == [4, 1, 2, 2]
    plain = prepare_ids.Lookup(["a", "b"], d)
    assert plain.one_to_one and plain.expand(np.array([1, 0]), np.array([2]))[0].tolist() == [b, a]
