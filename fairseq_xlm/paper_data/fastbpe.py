"""fastBPE's three commands, as the authors run them: ``learnbpe N FILES`` (joint codes), ``applybpe`` and
``getvocab``, with fastBPE's semantics to the byte (tests compare them with fastBPE's own C++ learner and its pip
package). Streaming: the text is read line by line; memory holds the distinct words, as fastBPE's.

What "fastBPE's semantics" means here, beyond textbook BPE (Sennrich et al. 2016):
- a word is a run of bytes between ' ' or '\\n' (a tab belongs to the word; a last word without a newline
  after it is not counted);
- characters are numbered in the order fastBPE meets them iterating its ``unordered_map`` of word counts
  (``stl_order``), and a tie between pairs of equal count goes to the smallest (left id, right id);
- pair counts are updated only around each merged occurrence (a pair overlapping itself, ``a a a``, keeps the
  counts fastBPE keeps), and the merged pair's count is then set to 0;
- fastBPE prints ``N`` merges even after every pair is used up (count-0 lines that merge nothing); we stop
  at the last merge with a positive count instead.
"""

import heapq
import os
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from fairseq_xlm.errors import DataSourceError

from .stl_order import iteration_order

END, DELIM = "</w>", "@@"
Codes = List[Tuple[str, str, int]]


class BpeError(DataSourceError):
    """A text, codes or vocabulary file that cannot be used; the message names it."""


def words_of(paths: Sequence[str]) -> Iterator[str]:
    """The words of ``paths`` as fastBPE's ``readText`` sees them."""
    for path in paths:
        if not os.path.isfile(path):
            raise BpeError(f"{path}: no such file")
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.endswith(b"\n"):  # the unterminated last word is not counted
                    line = line.rsplit(b" ", 1)[0] + b" " if b" " in line else b""
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise BpeError(f"{path}:{n}: not UTF-8 text ({e.reason} at byte {e.start})") from None
                for word in text.rstrip("\n").split(" "):
                    if word:
                        yield word


def count_words(paths: Sequence[str]) -> Dict[str, int]:
    """Word counts, keys in first-seen order (the insertion order of fastBPE's map)."""
    counts: Dict[str, int] = {}
    for word in words_of(paths):
        counts[word] = counts.get(word, 0) + 1
    if not counts:
        raise BpeError(f"{', '.join(paths)}: no words to learn BPE from")
    return counts


def learn_bpe(paths: Sequence[str], merges: int, start: Optional[Callable[[str], List[str]]] = None) -> Codes:
    """``fast learnbpe MERGES FILE [FILE2]`` (any number of files): the codes, ``(left, right, count)`` in
    merge order. ``start(word)``, when given, is a word's first segmentation (default: its characters, ``</w>``
    on the last), e.g. older codes' segmentation, so that the merges learned continue those codes."""
    counts = count_words(paths)
    keys = list(counts)
    token_id: Dict[str, int] = {}
    tokens: List[str] = []
    words: List[List[int]] = []
    freq: List[int] = []

    def intern(token: str) -> int:
        if token not in token_id:
            token_id[token] = len(tokens)
            tokens.append(token)
        return token_id[token]

    for i in iteration_order(keys):
        word = keys[i]
        words.append([intern(c) for c in (start(word) if start else list(word[:-1]) + [word[-1] + END])])
        freq.append(counts[word])
    del counts, keys
    pair_count: Dict[Tuple[int, int], int] = {}
    where: Dict[Tuple[int, int], set] = {}
    for wi, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pair_count[pair] = pair_count.get(pair, 0) + freq[wi]
            where.setdefault(pair, set()).add(wi)
    # max count, then smallest pair: a heap of (-count, left, right), stale entries skipped when popped
    heap = [(-c, a, b) for (a, b), c in pair_count.items()]
    heapq.heapify(heap)

    def change(pair: Tuple[int, int], v: int, wi: int) -> None:
        if pair in pair_count:
            pair_count[pair] += v
        elif v > 0:
            pair_count[pair] = v
            where[pair] = set()
        else:
            return
        if v > 0:
            where[pair].add(wi)
        heapq.heappush(heap, (-pair_count[pair], pair[0], pair[1]))

    codes: Codes = []
    while len(codes) < merges:
        while heap and (heap[0][0] != -pair_count.get((heap[0][1], heap[0][2]), 0) or heap[0][0] >= 0):
            heapq.heappop(heap)
        if not heap:
            break
        count, a, b = heapq.heappop(heap)
        codes.append((tokens[a], tokens[b], -count))
        new = intern(tokens[a] + tokens[b])
        for wi in where[(a, b)]:
            word, c = words[wi], freq[wi]
            i = 1
            while i < len(word):
                if word[i - 1] == a and word[i] == b:
                    if i > 1:
                        change((word[i - 2], a), -c, wi)
                        change((word[i - 2], new), c, wi)
                    word[i - 1:i + 1] = [new]
                    if i < len(word):
                        change((b, word[i]), -c, wi)
                        change((new, word[i]), c, wi)
                i += 1
        pair_count[(a, b)] = 0
    return codes


def write_codes(codes: Codes, path: str) -> None:
    """fastBPE's codes file: ``left right count`` per line."""
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{a} {b} {c}\n" for a, b, c in codes)


def read_codes(path: str) -> Codes:
    """A codes file (``left right count`` lines), checked."""
    from fairseq_xlm.data.authors_bpe import AuthorsBpeError, read_codes as check_read

    try:
        return check_read(path)
    except AuthorsBpeError as e:
        raise BpeError(str(e)) from None


def get_vocab(paths: Sequence[str]) -> List[Tuple[str, int]]:
    """``fast getvocab FILES``: every word with its count, most frequent first, ties in byte order."""
    counts: Dict[str, int] = {}
    for word in words_of(paths):
        counts[word] = counts.get(word, 0) + 1
    return sorted(counts.items(), key=lambda wc: (-wc[1], wc[0].encode("utf-8")))


def write_vocab(vocab: Iterable[Tuple[str, int]], path: str) -> None:
    """fastBPE's vocabulary file: ``word count`` per line (also fairseq's dict.txt format)."""
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{w} {c}\n" for w, c in vocab)


def apply_merges(symbols: Sequence[str], rank: Dict[Tuple[str, str], int]) -> List[str]:
    """``symbols`` after BPE with merge ranks ``rank`` (``{(left, right): line}``): the lowest-ranked adjacent
    pair is merged everywhere, left to right, until no adjacent pair has a rank (applybpe's loop; HF's
    ``XLMTokenizer.bpe`` is the same)."""
    word = list(symbols)
    while len(word) > 1:
        ranks = [rank.get(p, -1) for p in zip(word, word[1:])]
        best = min((r for r in ranks if r >= 0), default=-1)
        if best < 0:
            break
        pair, merged, i = (word[ranks.index(best)], word[ranks.index(best) + 1]), [], 0
        while i < len(word):
            if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
                merged.append(word[i] + word[i + 1])
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = merged
    return word


class ApplyBpe:
    """``fast applybpe OUT IN CODES [VOCAB]`` on words: ``hello`` -> ``hel@@ lo``; a cache per distinct word,
    as fastBPE's. With a vocabulary, pieces it lacks are split back along the codes (fastBPE's ``limitVocab``)."""

    def __init__(self, codes: Codes, vocab: Optional[Dict[str, int]] = None):
        self.rank = {(a, b): i for i, (a, b, _) in enumerate(codes)}
        self.reverse = {a + b: (a, b) for a, b, _ in codes}
        self.vocab = vocab or {}
        self.cache: Dict[str, str] = {}

    def word(self, word: str) -> str:
        """The pieces of one word, joined by ``@@ ``."""
        out = self.cache.get(word)
        if out is None:
            out = self.cache[word] = self._apply(word)
        return out

    def line(self, line: str) -> str:
        """A line of space-separated words, each replaced by its pieces (spaces kept as fastBPE keeps them)."""
        return " ".join(self.word(w) if w else w for w in line.split(" "))

    def _apply(self, word: str) -> str:
        subwords = apply_merges(list(word[:-1]) + [word[-1] + END], self.rank)
        if self.vocab:
            limited: List[str] = []
            for i, sub in enumerate(subwords):
                final = i == len(subwords) - 1
                if self._known(sub, final):
                    limited.append(sub)
                else:
                    self._decompose(sub, limited, final)
            subwords = limited
        return (DELIM + " ").join(subwords)[: -len(END)]

    def _known(self, sub: str, final: bool) -> bool:
        return (sub[: -len(END)] if final else sub + DELIM) in self.vocab

    def _decompose(self, sub: str, out: List[str], final: bool) -> None:
        if sub not in self.reverse:
            out.append(sub)  # a single character
            return
        left, right = self.reverse[sub]
        if left + DELIM in self.vocab:
            out.append(left)
        else:
            self._decompose(left, out, False)
        if self._known(right, final):
            out.append(right)
        else:
            self._decompose(right, out, final)
