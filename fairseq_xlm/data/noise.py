"""Denoising noise (Lample et al. 2018; XLM's ``--word_shuffle/dropout/blank``): shuffle, drop, blank.

Two units:

* token (the authors' and the default): every BPE token is shuffled, dropped or blanked on its own,
  exactly as ``Trainer.word_shuffle/word_dropout/word_blank`` in the authors' ``trainer.py`` do.
* word: the same rules applied to whole words, rebuilt from the BPE marks (``WordBoundaries``): with
  sentencepiece a piece starting with ``▁`` starts a word; with fastBPE a token ending with ``@@``
  continues into the next one. Special symbols (``<unk>``, ``<mask>``, ...) are words of their own.
  A blanked word keeps its length (every piece becomes the blank).

A sentence is in the authors' layout ``</s> s </s>``: the leading ``</s>`` is a unit that never moves,
drops or blanks, the trailing one is left out. Random numbers are drawn in the authors' order and shapes
for a batch of one sentence, so that the token unit with ``RandomState(s)`` equals their code after
``np.random.seed(s)``. fairseq's ``fairseq.data.noising`` does not fit: it only knows end-of-word marks,
its ``WordShuffle`` ignores its distance argument, and ``NoisingDataset`` draws the same noise every epoch.
"""

from typing import Optional

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset, Dictionary

SENTENCEPIECE = "\u2581"  # a piece starting with it starts a word
FASTBPE = "@@"            # a token ending with it continues into the next token
UNITS = ("token", "word")


def _is_special(index: int, symbol: str, dictionary: Dictionary) -> bool:
    return index < dictionary.nspecial or (symbol.startswith("<") and symbol.endswith(">"))


class WordBoundaries:
    """Per vocabulary id: does the token glue to the previous token / to the next one; is it a special
    symbol (a word of its own, glued to nothing)?"""

    def __init__(self, glue_prev: np.ndarray, glue_next: np.ndarray, special: np.ndarray, marker: str):
        self.glue_prev = np.asarray(glue_prev, dtype=bool)
        self.glue_next = np.asarray(glue_next, dtype=bool)
        self.special = np.asarray(special, dtype=bool)
        self.marker = marker

    @classmethod
    def from_dictionary(cls, dictionary: Dictionary, marker: Optional[str] = None) -> "WordBoundaries":
        """Word unit for a ``▁`` (sentencepiece) or ``@@`` (fastBPE) vocabulary; ``marker=None`` detects it
        (the mark more symbols carry)."""
        symbols = [(i, s) for i, s in enumerate(dictionary.symbols) if not _is_special(i, s, dictionary)]
        if marker is None:
            n_spm = sum(s.startswith(SENTENCEPIECE) for _, s in symbols)
            n_bpe = sum(s.endswith(FASTBPE) for _, s in symbols)
            if n_spm == n_bpe == 0:
                raise ValueError(f"no symbol starts with {SENTENCEPIECE!r} or ends with {FASTBPE!r}: cannot "
                                 "find word boundaries; pass marker= or use the token unit")
            marker = SENTENCEPIECE if n_spm >= n_bpe else FASTBPE
        if marker not in (SENTENCEPIECE, FASTBPE):
            raise ValueError(f"marker must be {SENTENCEPIECE!r} (sentencepiece) or {FASTBPE!r} (fastBPE), "
                             f"not {marker!r}")
        glue_prev = np.zeros(len(dictionary), dtype=bool)
        glue_next = np.zeros(len(dictionary), dtype=bool)
        special = np.ones(len(dictionary), dtype=bool)
        for i, s in symbols:
            special[i] = False
            if marker == SENTENCEPIECE:
                glue_prev[i] = not s.startswith(SENTENCEPIECE)
            else:
                glue_next[i] = s.endswith(FASTBPE)
        return cls(glue_prev, glue_next, special, marker)

    def word_ids(self, tokens: np.ndarray) -> np.ndarray:
        """Word index of every token: ▁: [▁a, b, ▁c] -> [0, 0, 1]; @@: [a@@, b, c] -> [0, 0, 1]."""
        if len(tokens) == 0:
            return np.zeros(0, dtype=np.int64)
        if tokens.max() >= len(self.glue_prev) or tokens.min() < 0:
            raise ValueError(f"token id outside the dictionary (size {len(self.glue_prev)}): "
                             f"{int(tokens.min())}..{int(tokens.max())}")
        left, right = tokens[:-1], tokens[1:]
        glued = (self.glue_next[left] | self.glue_prev[right]) & ~self.special[left] & ~self.special[right]
        return np.concatenate([[0], np.cumsum(~glued)])


def check_noise(shuffle: float, dropout: float, blank_prob: float) -> None:
    """The authors' ranges: shuffle 0 (off) or > 1 (k <= 1 could never move a unit); rates in [0, 1)."""
    if not (shuffle == 0 or shuffle > 1):
        raise ValueError(f"word shuffle must be 0 (off) or > 1, got {shuffle}")
    for name, p in (("word dropout", dropout), ("word blank", blank_prob)):
        if not 0 <= p < 1:
            raise ValueError(f"{name} must be in [0, 1), got {p}")


def add_noise(tokens: np.ndarray, boundaries: Optional[WordBoundaries], eos: int, blank: int, shuffle: float,
              dropout: float, blank_prob: float, rng: np.random.RandomState) -> np.ndarray:
    """Shuffle (k = ``shuffle``), drop and blank the units of ONE sentence ``</s> s </s>``.

    ``boundaries=None`` is the token unit (the authors'), else the word unit. Both ``</s>`` stay in place.
    """
    check_noise(shuffle, dropout, blank_prob)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or len(tokens) < 2 or tokens[0] != eos or tokens[-1] != eos:
        shown = tokens.ravel().tolist()[:8] + (["..."] if tokens.size > 8 else [])
        raise ValueError("add_noise expects one sentence laid out as `</s> s </s>` (a 1-d array that starts "
                         f"and ends with eos={eos}); got {shown}")
    units = tokens[:-1]  # position 0 is the leading </s>, a unit of its own; the trailing </s> is left out
    if boundaries is None:
        ids = np.arange(len(units))
    else:
        ids = np.concatenate([[0], 1 + boundaries.word_ids(units[1:])]) if len(units) > 1 else np.zeros(1, int)
    units, ids = _shuffle(units, ids, shuffle, rng)
    units, ids = _drop(units, ids, dropout, rng)
    units = _blank(units, ids, blank_prob, blank, rng)
    return np.concatenate([units, [eos]]).astype(tokens.dtype, copy=False)


def _shuffle(units, ids, k, rng):
    """Sort units by ``index + U(0, k)`` (the first pinned at -1): a unit moves fewer than k places."""
    if k == 0:
        return units, ids
    n = int(ids[-1]) + 1
    noise = rng.uniform(0, k, size=n)
    noise[0] = -1
    permutation = (np.arange(n) + noise).argsort()  # the authors' (default) sort, for equal results
    rank = np.empty(n, dtype=np.int64)
    rank[permutation] = np.arange(n)
    new_ids = rank[ids]
    order = np.argsort(new_ids, kind="stable")  # stable: a word's pieces keep their order
    return units[order], new_ids[order]


def _drop(units, ids, p, rng):
    """Delete each unit but the first with probability p; if none is left, keep one at random."""
    if p == 0:
        return units, ids
    n = int(ids[-1]) + 1
    keep = rng.rand(n) >= p
    keep[0] = True
    # The authors append words[randint(1, len(words))]: with n units that is unit randint(1, n), placed
    # right after the leading </s>, where keeping it puts it too. (Their code fails on an empty sentence.)
    if keep.sum() == 1 and n > 1:
        keep[rng.randint(1, n)] = True
    new_ids = np.cumsum(keep) - 1
    kept = keep[ids]
    return units[kept], new_ids[ids[kept]]


def _blank(units, ids, p, blank, rng):
    """Replace every token of each unit but the first by ``blank`` with probability p."""
    if p == 0:
        return units
    keep = rng.rand(int(ids[-1]) + 1) >= p
    keep[0] = True
    out = units.copy()
    out[~keep[ids]] = blank
    return out


class WordNoiseDataset(BaseWrapperDataset):
    """Noised copies of a ``s </s>`` token dataset; the noise depends on (seed, epoch, index) only.

    ``unit``: "token" (the authors') or "word" (see ``WordBoundaries``). Blanked units become ``blank_idx``
    (the task passes ``<mask>``; the default is ``<unk>``). ``sizes`` stay those of the clean sentences (an
    upper bound: noise never adds tokens), which is what batching needs.
    """

    def __init__(self, dataset, dictionary: Dictionary, shuffle: float = 3.0, dropout: float = 0.1,
                 blank: float = 0.1, blank_idx: Optional[int] = None, seed: int = 1,
                 vary_with_epoch: bool = True, unit: str = "token"):
        super().__init__(dataset)
        if unit not in UNITS:
            raise ValueError(f"noise unit must be one of {UNITS}, not {unit!r}")
        check_noise(shuffle, dropout, blank)
        self.boundaries = WordBoundaries.from_dictionary(dictionary) if unit == "word" else None
        self.eos = dictionary.eos()
        self.blank_idx = dictionary.unk() if blank_idx is None else blank_idx
        self.shuffle, self.dropout, self.blank = shuffle, dropout, blank
        self.seed = seed
        self.vary_with_epoch = vary_with_epoch  # False for validation: the same noise every time
        self.epoch = 1

    def set_epoch(self, epoch, **unused):
        super().set_epoch(epoch)
        if self.vary_with_epoch:
            self.epoch = epoch

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        return False  # new noise every epoch

    def __getitem__(self, index):
        return self.draw(index, (self.epoch, 0))

    def draw(self, index, key):
        """Noise seeded by (seed, *key, index); in training ``key`` is (epoch, pass), see ``schedule.Draw``."""
        tokens = self.dataset[index]
        rng = np.random.RandomState([self.seed % 2**32, *key, index])
        # our sentences are `s </s>`; the noise wants the authors' `</s> s </s>`
        noised = add_noise(np.concatenate([[self.eos], tokens.numpy()]), self.boundaries, self.eos,
                           self.blank_idx, self.shuffle, self.dropout, self.blank, rng)
        return torch.from_numpy(np.ascontiguousarray(noised[1:])).to(tokens.dtype)
