"""A sentencepiece BPE model grown by pieces learned on new text, every old piece keeping its id and every
old-language sentence its segmentation.

sentencepiece's BPE encoder merges, at each step, the adjacent pair whose concatenation is the vocabulary's
highest-scoring piece. New pieces are appended with scores below every old piece, so on any text the old
merges all happen first and yield the old segmentation S; a new merge can follow only where two adjacent
pieces of S concatenate to a new piece. ``drop_conflicts`` removes those new pieces for a given corpus (the
old data-bin), which makes the extended model segment that corpus exactly as the old one: not a sample
check, an argument plus the pair set of the corpus. One exception remains by design: a character the old
model did not know (``<unk>``) that is now a new piece gets that piece's id.
"""

import os
from itertools import chain, islice
from typing import Dict, Iterable, List, Set

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as spm_pb2

NORMAL = spm_pb2.ModelProto.SentencePiece.NORMAL


def load_proto(path: str) -> "spm_pb2.ModelProto":
    """The ModelProto of ``path``."""
    proto = spm_pb2.ModelProto()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def processor(proto: "spm_pb2.ModelProto") -> spm.SentencePieceProcessor:
    """A processor of an in-memory ModelProto."""
    return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


def train_pieces(files: List[str], vocab_size: int, coverage: float, sample_lines: int, seed: int,
                 work: str) -> "spm_pb2.ModelProto":
    """A BPE model of ``vocab_size`` pieces (soft limit) on ``files``, trained with ``prepare``'s settings."""
    prefix = os.path.join(work, "spm_new")
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        input=",".join(files), model_prefix=prefix, model_type="bpe", vocab_size=vocab_size,
        character_coverage=coverage, input_sentence_size=sample_lines, shuffle_input_sentence=True,
        hard_vocab_limit=False, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, minloglevel=2, num_threads=1)
    try:
        return load_proto(prefix + ".model")
    finally:
        for ext in ("model", "vocab"):
            os.remove(f"{prefix}.{ext}")


def unseen_pieces(old: "spm_pb2.ModelProto", new: "spm_pb2.ModelProto", reserved: Iterable[str]) -> List[str]:
    """Normal pieces of ``new`` that ``old`` lacks, in ``new``'s order (its merge order, characters last);
    pieces a dict.txt cannot hold (whitespace inside, fairseq's reserved words) are left out."""
    have, reserved = {p.piece for p in old.pieces}, set(reserved)
    return [p.piece for p in new.pieces
            if p.type == NORMAL and p.piece not in have and p.piece not in reserved and p.piece.split() == [p.piece]]


def adjacent_concatenations(tokens: np.ndarray, eos: int, symbols: List[str], chunk: int = 1 << 24) -> Set[str]:
    """Every string ``symbols[a] + symbols[b]`` of two adjacent tokens of a binarized stream (sentences end in
    ``eos``; pairs across it are not adjacent), read ``chunk`` tokens at a time (a memory map stays one)."""
    codes: Set[int] = set()
    n = len(symbols)
    for lo in range(0, max(len(tokens) - 1, 0), chunk):
        part = np.asarray(tokens[lo:lo + chunk + 1], dtype=np.int64)  # one token of overlap: no pair is lost
        a, b = part[:-1], part[1:]
        keep = (a != eos) & (b != eos)
        codes.update(np.unique(a[keep] * n + b[keep]).tolist())
    return {symbols[c // n] + symbols[c % n] for c in codes}


def reachable(pieces: List[str], base: Set[str]) -> List[str]:
    """The pieces of ``pieces`` a BPE encoder can build: single characters, or a split into two pieces of
    ``base`` or of the kept ones (iterated to a fixed point, so dead rows never reach the embeddings)."""
    kept, known, changed = [], set(base), True
    todo = list(pieces)
    while changed:
        changed, rest = False, []
        for p in todo:
            if len(p) == 1 or any(p[:i] in known and p[i:] in known for i in range(1, len(p))):
                kept.append(p)
                known.add(p)
                changed = True
            else:
                rest.append(p)
        todo = rest
    order = {p: i for i, p in enumerate(pieces)}
    return sorted(kept, key=order.__getitem__)


def drop_conflicts(pieces: List[str], pairs: Set[str], base: Set[str]) -> List[str]:
    """``pieces`` less those that are a concatenation in ``pairs`` (they would re-segment old text), then less
    the ones no longer reachable."""
    return reachable([p for p in pieces if p not in pairs], base)


def extend(old: "spm_pb2.ModelProto", pieces: List[str]) -> "spm_pb2.ModelProto":
    """A copy of ``old`` with ``pieces`` appended in order, scored below every old piece (so they merge
    last, in their given order)."""
    out = spm_pb2.ModelProto()
    out.CopyFrom(old)
    low = min(p.score for p in old.pieces) if old.pieces else 0.0
    for i, piece in enumerate(pieces):
        out.pieces.add(piece=piece, score=low - 1.0 - i, type=NORMAL)
    # the trainer's vocab size is informational, but keep it true for tools that read it
    out.trainer_spec.vocab_size = len(out.pieces)
    return out


def splitter(old: "spm_pb2.ModelProto") -> spm.SentencePieceProcessor:
    """``old`` with whitespace kept as is and no dummy prefix: ``encode(piece.replace("▁", " "))`` gives the old
    segmentation of exactly a piece's surface (a word-inner piece is not made word-initial)."""
    proto = spm_pb2.ModelProto()
    proto.CopyFrom(old)
    proto.normalizer_spec.add_dummy_prefix = False
    proto.normalizer_spec.remove_extra_whitespaces = False
    return processor(proto)


def piece_counts(sp: spm.SentencePieceProcessor, files: List[str], batch: int = 20_000) -> Dict[str, int]:
    """How often each piece of ``sp`` occurs in ``files`` (one sentence a line), ``batch`` lines at a time."""
    counts = np.zeros(sp.get_piece_size(), np.int64)
    for path in files:
        with open(path, encoding="utf-8") as f:
            while True:
                rows = [row.rstrip("\n") for row in islice(f, batch)]
                if not rows:
                    break
                ids = sp.encode(rows, out_type=int)
                counts += np.bincount(np.fromiter(chain.from_iterable(ids), np.int64), minlength=len(counts))
    return {sp.id_to_piece(i): int(c) for i, c in enumerate(counts) if c}
