"""Word-level noise for denoising auto-encoding (Lample et al. 2018; XLM's ``--word_shuffle/dropout/blank``).

Noise acts on whole words. With sentencepiece, a piece that starts with ``▁`` starts a word and every
other piece continues the previous one (special symbols such as ``<unk>`` and ``<mask>`` count as words
of their own). fairseq's ``fairseq.data.noising`` does not fit: it finds word *ends* from a per-token
marker (``@@`` / ``</w>``), which a start-of-word marker cannot express without looking at the next
token; its ``WordShuffle`` also ignores its distance argument and pins position 0 (it assumes a BOS
token), and ``NoisingDataset`` draws the same noise in every epoch. Hence these small functions.

The order is the authors': shuffle, then drop, then blank. A trailing ``</s>`` is never noised.
"""

from typing import Optional

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset, Dictionary

WORD_START = "\u2581"


def word_start_table(dictionary: Dictionary) -> np.ndarray:
    """Bool per vocabulary id: True when the symbol begins a word (``▁...`` or a special symbol)."""
    table = np.zeros(len(dictionary), dtype=bool)
    for i, symbol in enumerate(dictionary.symbols):
        table[i] = i < dictionary.nspecial or symbol.startswith(WORD_START) or (
            symbol.startswith("<") and symbol.endswith(">")
        )
    return table


def word_ids(tokens: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Word index of every token: [▁a, b, ▁c] -> [0, 0, 1]; a leading continuation piece opens word 0."""
    is_start = starts[tokens].copy()
    if len(is_start):
        is_start[0] = True
    return np.cumsum(is_start) - 1


def _words(tokens: np.ndarray, ids: np.ndarray):
    """Split tokens into a list of per-word arrays."""
    cuts = np.flatnonzero(np.diff(ids)) + 1
    return np.split(tokens, cuts)


def shuffle_words(tokens: np.ndarray, ids: np.ndarray, k: float, rng: np.random.RandomState) -> np.ndarray:
    """Reorder words by sorting ``index + U(0, k)``: a word moves by at most ceil(k) - 1 < k places.

    (Word i can only pass word j if |i - j| < k.) k <= 1 leaves the order unchanged, as in the authors' code.
    """
    if k <= 1 or len(tokens) == 0:
        return tokens
    words = _words(tokens, ids)
    scores = np.arange(len(words)) + rng.uniform(0, k, size=len(words))
    order = np.argsort(scores, kind="stable")
    return np.concatenate([words[i] for i in order])


def drop_words(tokens: np.ndarray, ids: np.ndarray, p: float, rng: np.random.RandomState) -> np.ndarray:
    """Delete each word with probability p; one random word survives if all would go."""
    if p <= 0 or len(tokens) == 0:
        return tokens
    words = _words(tokens, ids)
    keep = rng.rand(len(words)) >= p
    if not keep.any():
        keep[rng.randint(len(words))] = True
    return np.concatenate([w for w, k in zip(words, keep) if k])


def blank_words(tokens: np.ndarray, ids: np.ndarray, p: float, blank: int,
                rng: np.random.RandomState) -> np.ndarray:
    """Replace every piece of a word by ``blank`` with probability p (the length stays the same)."""
    if p <= 0 or len(tokens) == 0:
        return tokens
    hit = rng.rand(int(ids[-1]) + 1) < p
    out = tokens.copy()
    out[hit[ids]] = blank
    return out


def add_noise(tokens: np.ndarray, starts: np.ndarray, eos: int, blank: int, shuffle: float, dropout: float,
              blank_prob: float, rng: np.random.RandomState) -> np.ndarray:
    """Shuffle, drop and blank the words of one sentence; a trailing ``</s>`` stays in place."""
    has_eos = len(tokens) > 0 and tokens[-1] == eos
    body = tokens[:-1] if has_eos else tokens
    if len(body):
        body = shuffle_words(body, word_ids(body, starts), shuffle, rng)
        body = drop_words(body, word_ids(body, starts), dropout, rng)
        body = blank_words(body, word_ids(body, starts), blank_prob, blank, rng)
    return np.concatenate([body, [eos]]) if has_eos else body


class WordNoiseDataset(BaseWrapperDataset):
    """Noised copies of a token dataset; the noise depends on (seed, epoch, index) only.

    Blanked words become ``blank_idx`` (the task passes ``<mask>``, the token MLM pretraining taught the
    model to read as "a word is missing here"; the default is ``<unk>``).

    ``sizes`` stay those of the clean sentences (an upper bound: noise never adds tokens), which is what
    batching needs.
    """

    def __init__(self, dataset, dictionary: Dictionary, shuffle: float = 3.0, dropout: float = 0.1,
                 blank: float = 0.1, blank_idx: Optional[int] = None, seed: int = 1,
                 vary_with_epoch: bool = True):
        super().__init__(dataset)
        self.starts = word_start_table(dictionary)
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
        tokens = self.dataset[index]
        rng = np.random.RandomState([self.seed % 2**32, self.epoch, index])
        noised = add_noise(tokens.numpy(), self.starts, self.eos, self.blank_idx, self.shuffle, self.dropout,
                           self.blank, rng)
        return torch.from_numpy(np.ascontiguousarray(noised)).to(tokens.dtype)
