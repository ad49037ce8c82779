"""encode, dict and binarize of ``prepare`` for the shared sentencepiece BPE, on token ids, never on text.

    encode    raw lines -> sentencepiece ids (batch ``encode``, ``--workers`` threads), kept in WORK/ids/ as
              fairseq mmap datasets of spm ids (one per raw file; labels of kept lines beside them)
    dict      piece counts of the training files (``np.bincount`` over the ids) -> dict.txt
    binarize  spm ids -> dictionary ids through one lookup table, eos appended, written as the .bin/.idx
              pairs of fairseq's ``MMapIndexedDatasetBuilder``

The outputs are byte-identical to the text path this replaces (pieces written as text, counted with
``str.split``, binarized by ``fairseq-preprocess``; ``prepare_authors`` still works that way, and
tests/test_prepare_ids.py compares the two): a piece is mapped to the dictionary ids of ``piece.split()``,
which is one id for every piece but one holding a character Python calls whitespace (e.g. U+0085)."""

import contextlib
import dataclasses
import logging
import os
import shutil
import struct
from concurrent.futures import ThreadPoolExecutor
from itertools import chain, compress
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import sentencepiece as spm
from fairseq.data import Dictionary
from fairseq.data.indexed_dataset import MMapIndexedDataset, _dtype_header_code, best_fitting_int_dtype

from fairseq_xlm.cli.prepare_stages import RESERVED, PrepareConfig, PrepareError, atomic_path, batches, encode_stats
from fairseq_xlm.data.layout import MASK

logger = logging.getLogger("fairseq_xlm.cli.prepare")

IDS = "ids"  # WORK/ids/: the encode stage's output
BATCH = 20_000  # raw lines per sentencepiece call: large enough for its threads, small enough for memory
CHUNK = 200_000  # sentences per lookup-and-write step of binarize


# ---------------------------------------------------------------- fairseq's mmap format, written from arrays


class TokenWriter:
    """Appends sentences to ``prefix``.bin/.idx in the bytes ``MMapIndexedDatasetBuilder`` writes (fairseq 0.12:
    magic, version 1, dtype code, count, int32 sizes, int64 byte offsets), from flat arrays instead of one
    tensor per sentence. Both files go to temporary names and are renamed by ``close``."""

    def __init__(self, stack: contextlib.ExitStack, prefix: str, dtype):
        self.dtype, self.sizes = np.dtype(dtype), []
        self.tmp_idx = stack.enter_context(atomic_path(prefix + ".idx"))
        self.bin = stack.enter_context(open(stack.enter_context(atomic_path(prefix + ".bin")), "wb"))
        stack.callback(self.close)  # runs before the renames (LIFO), so both files are complete when renamed

    def add(self, tokens: np.ndarray, sizes: np.ndarray) -> None:
        """Sentences of ``sizes`` tokens, concatenated in ``tokens``."""
        self.bin.write(tokens.astype(self.dtype, copy=False).tobytes())
        self.sizes.append(np.asarray(sizes, dtype=np.int32))

    def close(self) -> None:
        self.bin.close()
        sizes = np.concatenate(self.sizes) if self.sizes else np.zeros(0, np.int32)
        pointers = np.zeros(len(sizes), np.int64)
        np.cumsum(sizes[:-1], dtype=np.int64, out=pointers[1:])
        with open(self.tmp_idx, "wb") as f:
            f.write(MMapIndexedDataset.Index._HDR_MAGIC + struct.pack("<Q", 1)
                    + struct.pack("<B", _dtype_header_code(self.dtype.type)) + struct.pack("<Q", len(sizes)))
            f.write(sizes.tobytes())
            f.write((pointers * self.dtype.itemsize).tobytes())


def read_tokens(prefix: str) -> Tuple[np.ndarray, np.ndarray]:
    """(all tokens, sizes) of an mmap dataset, the tokens memory-mapped."""
    index = MMapIndexedDataset.Index(prefix + ".idx")
    sizes, dtype = np.array(index.sizes, dtype=np.int64), index.dtype
    del index  # it keeps the .idx mapped
    total = int(sizes.sum())
    return (np.memmap(prefix + ".bin", dtype=dtype, mode="r", shape=(total,)) if total else np.zeros(0, dtype)), sizes


# ---------------------------------------------------------------- encode


def encode(cfg: PrepareConfig, corpora: Dict[str, List[str]], work: str) -> dict:
    """Every raw file -> its sentencepiece ids in WORK/ids/{file}.bin/.idx (lines over --max-line-tokens on any
    side dropped, from every side and the labels); unknown characters (spm's unk id) are counted."""
    sp = _processor(cfg)
    dtype, unk_id = best_fitting_int_dtype(sp.get_piece_size()), sp.unk_id()
    ids_dir = os.path.join(work, IDS)
    os.makedirs(ids_dir, exist_ok=True)
    stats, outputs = {}, []
    for name, files in sorted(corpora.items()):
        label = f"{name}.label" if len(files) == 1 and os.path.isfile(os.path.join(cfg.raw, f"{name}.label")) else None
        kept = long = dropped = unk = tokens = 0
        first_long: Optional[int] = None
        with contextlib.ExitStack() as stack:
            srcs = [stack.enter_context(open(os.path.join(cfg.raw, f), encoding="utf-8")) for f in files + [label] if f]
            writers = [TokenWriter(stack, os.path.join(ids_dir, f), dtype) for f in files]
            labels = stack.enter_context(open(stack.enter_context(atomic_path(os.path.join(ids_dir, label))), "w",
                                              encoding="utf-8")) if label else None
            for start, rows, sides in _encoded(sp, zip(*srcs), len(files), cfg.workers):
                lengths = np.array([[len(x) for x in side] for side in sides], dtype=np.int64).reshape(len(files), -1)
                longest = lengths.max(axis=0)
                over = longest > cfg.warn_line_tokens
                if over.any():
                    long += int(over.sum())
                    first_long = first_long or start + int(np.argmax(over)) + 1
                keep = ~(longest > cfg.max_line_tokens) if cfg.max_line_tokens else np.ones(len(rows), bool)
                dropped += int((~keep).sum())
                kept += int(keep.sum())
                for side, sizes, writer in zip(sides, lengths, writers):
                    sizes = sizes[keep]
                    flat = np.fromiter(chain.from_iterable(compress(side, keep)), dtype, int(sizes.sum()))
                    writer.add(flat, sizes)
                    tokens += len(flat)
                    unk += int(np.count_nonzero(flat == unk_id))
                if labels:
                    labels.writelines(row[-1].rstrip("\n") + "\n" for row in compress(rows, keep))
        stats[name] = encode_stats(cfg, files[0], kept, long, first_long, dropped, tokens, unk)
        outputs += [os.path.join("prep", IDS, f"{f}.{ext}") for f in files for ext in ("bin", "idx")]
        outputs += [os.path.join("prep", IDS, label)] if label else []
    return {"stats": stats, "outputs": outputs}


def _encoded(sp, rows: Iterator[tuple], sides: int, workers: int) -> Iterator[tuple]:
    """(index of the first row, rows, spm ids of each side) per batch of rows. With workers > 1 the next batch
    is encoded (sentencepiece's threads, which release the GIL) while the caller writes this one, so reading
    and writing in Python overlap the encoding instead of adding to it."""
    def encode_rows(rows):
        return [sp.encode([row[i].rstrip("\n") for row in rows], out_type=int, num_threads=workers)
                for i in range(sides)]

    if workers == 1:
        for start, rows in batches(rows, BATCH):
            yield start, rows, encode_rows(rows)
        return
    with ThreadPoolExecutor(1) as pool:
        pending = None
        for start, rows in batches(rows, BATCH):
            ahead = pool.submit(encode_rows, rows)
            if pending:
                yield pending[0], pending[1], pending[2].result()
            pending = (start, rows, ahead)
        if pending:
            yield pending[0], pending[1], pending[2].result()


# ---------------------------------------------------------------- dict


def _processor(cfg: PrepareConfig) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=os.path.join(cfg.destdir, "spm.model"))


def _pieces(sp: spm.SentencePieceProcessor) -> List[str]:
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


def build_dict(cfg: PrepareConfig, corpora: Dict[str, List[str]], work: str) -> dict:
    """dict.txt: every sentencepiece piece once, ordered by training frequency (unseen ones count 0; ties in
    fairseq's order, ``Dictionary.finalize``: alphabetical). No <mask> (tasks append it) and no padding words,
    so <mask> always lands right after the pieces."""
    sp = _processor(cfg)
    pieces = _pieces(sp)
    per_id = np.zeros(len(pieces), np.int64)
    for name, files in corpora.items():
        if name.startswith("train."):
            for file in files:
                tokens, _ = read_tokens(os.path.join(work, IDS, file))
                for lo in range(0, len(tokens), 1 << 24):  # bincount widens to int64: bound that copy
                    per_id += np.bincount(tokens[lo:lo + (1 << 24)], minlength=len(pieces))
    counts: Dict[str, int] = {}
    for i in np.flatnonzero(per_id):  # what str.split of the pieces as text counts: pieces split at whitespace
        for word in pieces[i].split():
            counts[word] = counts.get(word, 0) + int(per_id[i])
    dictionary = Dictionary()
    for i, piece in enumerate(pieces):
        if not (sp.is_control(i) or sp.is_unknown(i) or piece in RESERVED):
            dictionary.add_symbol(piece, n=counts.get(piece, 0))
    dictionary.finalize(threshold=-1, nwords=-1, padding_factor=1)
    with atomic_path(os.path.join(cfg.destdir, "dict.txt")) as tmp, open(tmp, "w", encoding="utf-8") as f:
        dictionary.save(f)
    logger.info(f"dict.txt: {len(dictionary)} symbols with fairseq's specials ({len(dictionary) + 1} with {MASK})")
    return {"size": len(dictionary), "outputs": ["dict.txt"]}


# ---------------------------------------------------------------- binarize


class Lookup:
    """spm id -> the dictionary ids fairseq-preprocess gives that piece as text (``piece.split()``, each word's
    ``Dictionary.index``: <unk> for words the dictionary lacks). One id per piece but for pieces holding
    whitespace, which map to 0 or several: then sentences change length, handled by ``expand``."""

    def __init__(self, pieces: List[str], dictionary: Dictionary):
        words = [[dictionary.index(w) for w in piece.split()] for piece in pieces]
        self.counts = np.array([len(w) for w in words], np.int64)
        self.values = np.array([i for w in words for i in w], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.one_to_one = bool((self.counts == 1).all())

    def expand(self, tokens: np.ndarray, sizes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if self.one_to_one:
            return self.values[tokens], sizes
        n = self.counts[tokens]
        ends = np.cumsum(n)
        row_ends = np.cumsum(sizes)
        at = np.concatenate([[0], ends])[row_ends]
        new_sizes = np.diff(np.concatenate([[0], at]))
        within = np.arange(int(ends[-1]) if len(ends) else 0) - np.repeat(ends - n, n)
        return self.values[np.repeat(self.starts[tokens], n) + within], new_sizes


def _with_eos(tokens: np.ndarray, sizes: np.ndarray, eos: int) -> Tuple[np.ndarray, np.ndarray]:
    sizes = sizes + 1
    out = np.empty(int(sizes.sum()), np.int64)
    eos_at = np.cumsum(sizes) - 1
    body = np.ones(len(out), bool)
    body[eos_at] = False
    out[body], out[eos_at] = tokens, eos
    return out, sizes


def binarize(cfg: PrepareConfig, corpora: Dict[str, List[str]], work: str,
             rows: Callable[[str, int], Tuple[int, int]] = lambda corpus, n: (0, n)) -> dict:
    """WORK/ids -> DESTDIR's {split}.{lang}.bin/.idx and {split}.{l1}-{l2}.{lang}.bin/.idx (+ labels), sentences
    ``rows(corpus, lines)`` = [lo, hi) of each; ids through dict.txt, eos appended."""
    dictionary = Dictionary.load(os.path.join(cfg.destdir, "dict.txt"))
    lookup = Lookup(_pieces(_processor(cfg)), dictionary)
    dtype = best_fitting_int_dtype(len(dictionary))
    outputs = []
    for name, files in sorted(corpora.items()):
        split, unit = name.split(".", 1)
        for file in files:
            final = f"{split}.{unit}" + (f".{file.rsplit('.', 1)[1]}" if "-" in unit else "")
            tokens, sizes = read_tokens(os.path.join(work, IDS, file))
            lo, hi = rows(name, len(sizes))
            offsets = np.concatenate([[0], np.cumsum(sizes)])
            with contextlib.ExitStack() as stack:
                writer = TokenWriter(stack, os.path.join(cfg.destdir, final), dtype)
                for a in range(lo, hi, CHUNK):
                    b = min(a + CHUNK, hi)
                    ids, n = lookup.expand(np.asarray(tokens[offsets[a]:offsets[b]]), sizes[a:b])
                    writer.add(*_with_eos(ids, n, dictionary.eos()))
            outputs += [f"{final}.bin", f"{final}.idx"]
        label = os.path.join(work, IDS, f"{name}.label")
        if len(files) == 1 and os.path.isfile(label):
            lo, hi = rows(name, len(sizes))
            with open(label, encoding="utf-8") as src, atomic_path(os.path.join(cfg.destdir, f"{name}.label")) as tmp, \
                    open(tmp, "w", encoding="utf-8") as out:
                out.writelines(line for k, line in enumerate(src) if lo <= k < hi)
            outputs.append(f"{name}.label")
    return {"outputs": outputs}


def binarize_shard(cfg: PrepareConfig, corpora: Dict[str, List[str]], work: str, shard: int) -> dict:
    """Shard ``shard`` of ``cfg.shards``: the ``shard``-th contiguous slice of every training file (parallel
    sides and labels cut at the same lines), plus valid/test in shard 0, binarized into DESTDIR/shard{i} with
    the shared dict.txt and BPE model."""
    name = f"shard{shard}"
    dest = os.path.join(cfg.destdir, name)
    os.makedirs(dest, exist_ok=True)
    for shared in ("dict.txt", "spm.model", "spm.vocab"):
        with atomic_path(os.path.join(dest, shared)) as tmp:
            shutil.copyfile(os.path.join(cfg.destdir, shared), tmp)
    mine = {k: v for k, v in corpora.items() if k.startswith("train.") or shard == 0}

    def rows(corpus: str, lines: int) -> Tuple[int, int]:
        if not corpus.startswith("train."):
            return 0, lines
        lo, hi = lines * shard // cfg.shards, lines * (shard + 1) // cfg.shards
        if hi <= lo:
            raise PrepareError(f"{os.path.join(cfg.raw, corpora[corpus][0])}: {lines} lines cannot fill "
                               f"{cfg.shards} shards")
        return lo, hi

    result = binarize(dataclasses.replace(cfg, destdir=dest), mine, work, rows)
    return {"outputs": [os.path.join(name, p) for p in ["dict.txt", "spm.model"] + result["outputs"]]}
