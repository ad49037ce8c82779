"""fastBPE codes (the authors' BPE) grown by merges learned on new text, every old-language sentence keeping
its segmentation; the counterpart of ``spm_extend`` for data-bins made by ``prepare --bpe authors``.

fastBPE's ``applybpe`` (and HF's ``XLMTokenizer.bpe``, which a data-bin's ``authors_bpe/`` runs) splits a word
into characters (``</w>`` on the last) and repeatedly merges every occurrence of the adjacent pair of lowest
rank, rank being the line number in the codes. Merges appended after the old codes rank below every old one,
so on any word the old merges all happen first and yield the old segmentation S; an appended merge ``(a, b)``
can then only fire where tokens ``a`` and ``b`` are adjacent in S. ``drop_conflicts`` removes the appended
merges whose pair is adjacent in some word of a corpus (the old data-bin, read as pairs by ``final_pairs``),
and those whose parts can no longer be formed without them, which makes the grown codes segment that corpus
exactly as the old ones. A word the old vocabulary lacked a token of (``<unk>`` in the data-bin) is covered
too: every merge with the known neighbour of an unknown token on that side goes. One exception remains by
design, as in ``spm_extend``: a token the old vocabulary mapped to ``<unk>`` that the new text adds to the
vocabulary (a character of the new language) gets its own id.

Spellings: codes and ``XLMTokenizer`` write ``lo</w>`` for a word-final token and ``hel`` for a continuing one;
the vocabulary and dict.txt write ``lo`` and ``hel@@`` (``authors_bpe.hf_piece`` / ``authors_piece``).
"""

from typing import Dict, Iterable, List, Sequence, Set, Tuple

import numpy as np

from fairseq_xlm.paper_data.fastbpe import apply_merges

from .authors_bpe import CONTINUE, END, hf_piece

Codes = List[Tuple[str, str, int]]


def ranks(codes: Iterable[Tuple[str, str, int]]) -> Dict[Tuple[str, str], int]:
    """``{(left, right): line}`` of codes."""
    return {(a, b): i for i, (a, b, _) in enumerate(codes)}


def _authors(tokens: List[str]) -> List[str]:
    return [t[: -len(END)] if t.endswith(END) else t + CONTINUE for t in tokens]


def segment_word(word: str, rank: Dict[Tuple[str, str], int]) -> List[str]:
    """One word's tokens in the authors' spelling (``hel@@ lo``) under the codes of ``rank``."""
    return _authors(apply_merges(list(word[:-1]) + [word[-1] + END], rank))


def split_piece(piece: str, rank: Dict[Tuple[str, str], int]) -> List[str]:
    """The tokens (authors' spelling) the codes of ``rank`` split a vocabulary piece's surface into: ``chi@@``
    as the start of a longer word (no ``</w>``), ``ntchito`` as a word's end; a piece the codes would form
    whole comes back as itself."""
    if not piece.endswith(CONTINUE):
        return segment_word(piece, rank)
    return _authors(apply_merges(list(piece[: -len(CONTINUE)]), rank))


def final_pairs(tokens: np.ndarray, eos: int, unk: int, symbols: Sequence[str],
                chunk: int = 1 << 24) -> Tuple[Set[Tuple[str, str]], Set[str], Set[str]]:
    """Of a binarized stream in the authors' spelling (sentences end in ``eos``): (the adjacent token pairs
    inside a word, in the codes' spelling; the known tokens left of an ``<unk>`` that continues into it; the
    known tokens right of an ``<unk>``, which may continue into them). Read ``chunk`` tokens at a time."""
    n = len(symbols)
    codes: Set[int] = set()
    for lo in range(0, max(len(tokens) - 1, 0), chunk):
        part = np.asarray(tokens[lo:lo + chunk + 1], dtype=np.int64)  # one token of overlap: no pair is lost
        a, b = part[:-1], part[1:]
        keep = (a != eos) & (b != eos)
        codes.update(np.unique(a[keep] * n + b[keep]).tolist())
    pairs, left_of_unk, right_of_unk = set(), set(), set()
    for code in codes:
        a, b = symbols[code // n], symbols[code % n]
        if code // n == unk and code % n != unk:
            right_of_unk.add(hf_piece(b))  # the <unk> may or may not continue: assume it does
        elif code % n == unk and a.endswith(CONTINUE):
            left_of_unk.add(a[: -len(CONTINUE)])
        elif a.endswith(CONTINUE) and code // n != unk:  # a word-final a: b starts the next word
            pairs.add((a[: -len(CONTINUE)], hf_piece(b)))
    return pairs, left_of_unk, right_of_unk


def _is_char(token: str) -> bool:
    return len(token[: -len(END)] if token.endswith(END) else token) == 1


def drop_conflicts(new: Codes, old: Codes, pairs: Set[Tuple[str, str]], left_of_unk: Set[str] = frozenset(),
                   right_of_unk: Set[str] = frozenset()) -> Codes:
    """The merges of ``new`` (in order) that may be appended to ``old``: not already in ``old``, pair not in
    ``pairs`` (``final_pairs`` of the old corpus), left part not in ``left_of_unk``, right part not in
    ``right_of_unk``, and both parts formable: a character, or made by an old or a kept merge (iterated to a
    fixed point, as merges fire by rank whichever merge made their parts, so dead merges never reach the
    codes)."""
    have = {(a, b) for a, b, _ in old}  # grows: a pair fastBPE learned twice is appended once (codes are unique)
    candidates = []
    for a, b, count in new:
        if (a, b) not in have and (a, b) not in pairs and a not in left_of_unk and b not in right_of_unk:
            candidates.append((a, b, count))
            have.add((a, b))
    formed = {a + b for a, b, _ in old}
    kept: Set[int] = set()
    changed = True
    while changed:
        changed = False
        for i, (a, b, _) in enumerate(candidates):
            if i not in kept and all(_is_char(p) or p in formed for p in (a, b)):
                kept.add(i)
                formed.add(a + b)
                changed = True
    return [m for i, m in enumerate(candidates) if i in kept]


def token_counts(words: Dict[str, int], rank: Dict[Tuple[str, str], int]) -> Dict[str, int]:
    """How often each token (authors' spelling) occurs when the codes of ``rank`` segment ``words``
    (``{word: count}``): fastBPE's ``getvocab`` on the segmented text."""
    counts: Dict[str, int] = {}
    for word, n in words.items():
        for token in segment_word(word, rank):
            counts[token] = counts.get(token, 0) + n
    return counts
