"""The paper's cross-lingual word embedding evaluation (Lample & Conneau, 2019, sec. 5.4 / table 8): how close a
model's embedding table puts words and their translations.

A word is what the model sees of it: sentencepiece's pieces of the word alone (as ``prepare`` encodes text,
so ``house`` may be ``▁house`` or ``▁ho use``), looked up in dict.txt; its vector is the **mean of its pieces'
input embeddings** (rows of the token embedding table, which the output layer shares). A word with a piece
outside the vocabulary (``<unk>``) has no vector and its pairs are left out (the count is reported).

Scores, as the paper's table: mean cosine similarity and mean L2 distance between the vectors of source
words and their translations (a bilingual dictionary, MUSE's format or Debian's FreeDict), and the Pearson
correlation between cosine similarities and human scores on SemEval'17 cross-lingual word similarity
(task 2, subtask 2). The mean cosine of shuffled (non-translation) pairs is reported beside it: what the
cosine of translations should beat.
"""

import gzip
import math
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_WORD = re.compile(r"^[^\W\d_]+$")  # letters only: one word, no phrase, number or abbreviation dot


def read_muse_dictionary(path: str) -> List[Tuple[str, str]]:
    """(source, target) pairs of a MUSE dictionary: one pair a line, separated by a space or a tab."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise ValueError(f"{path}:{number}: expected 'source target', got {line.rstrip()!r}")
            pairs.append((parts[0], parts[1]))
    if not pairs:
        raise ValueError(f"{path}: no word pairs")
    return pairs


def read_semeval(data_path: str, gold_path: str) -> List[Tuple[str, str, float]]:
    """SemEval'17 task 2 cross-lingual pairs: ``word1<TAB>word2`` lines and their gold scores, one a line."""
    with open(data_path, encoding="utf-8") as f:
        words = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    with open(gold_path, encoding="utf-8") as f:
        gold = [line.strip() for line in f if line.strip()]
    if len(words) != len(gold):
        raise ValueError(f"{data_path}: {len(words)} pairs but {gold_path} has {len(gold)} scores")
    out = []
    for number, (pair, score) in enumerate(zip(words, gold), start=1):
        if len(pair) != 2:
            raise ValueError(f"{data_path}:{number}: expected 'word1<TAB>word2', got {pair}")
        try:
            out.append((pair[0], pair[1], float(score)))
        except ValueError:
            raise ValueError(f"{gold_path}:{number}: {score!r} is not a score") from None
    return out


def _b64(text: str) -> int:
    value = 0
    for char in text:
        value = value * 64 + _B64.index(char)
    return value


def read_freedict(index_path: str, dict_path: str) -> List[Tuple[str, str]]:
    """(source, target) word pairs of a dictd dictionary (FreeDict's ``.index`` + ``.dict.dz``): headwords
    that are one word and appear once (multi-word entries repeat their first word), each translation that is
    one word; lowercased, repeated pairs once."""
    opener = gzip.open if dict_path.endswith(".dz") else open
    with opener(dict_path, "rb") as f:
        body = f.read()
    with open(index_path, encoding="utf-8") as f:
        entries = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    bad = [e for e in entries if len(e) != 3]
    if bad:
        raise ValueError(f"{index_path}: lines without 'headword<TAB>offset<TAB>length': {bad[:2]}")
    heads = [e[0] for e in entries]
    counts = {h: heads.count(h) for h in set(heads)}
    pairs, seen = [], set()
    for head, offset, length in entries:
        if head.startswith("00database") or counts[head] > 1 or not _WORD.match(head):
            continue
        text = body[_b64(offset): _b64(offset) + _b64(length)].decode("utf-8")
        for line in text.split("\n")[1:]:  # the first line is the headword and its pronunciation
            line = re.sub(r"^\s*\d+\.\s*", "", line)
            for target in (t.strip().lower() for t in line.split(",")):
                pair = (head.lower(), target)
                if _WORD.match(target) and pair not in seen:
                    seen.add(pair)
                    pairs.append(pair)
    if not pairs:
        raise ValueError(f"{index_path}: no one-word pairs found")
    return pairs


def piece_ids(words: Sequence[str], sp, dictionary) -> List[List[int]]:
    """Each word's dict.txt ids of its sentencepiece pieces (the word encoded alone, as prepare encodes text)."""
    return [[dictionary.index(piece) for piece in sp.encode(word, out_type=str)] for word in words]


def word_vectors(words: Sequence[str], embeddings: torch.Tensor, sp, dictionary) -> Tuple[np.ndarray, np.ndarray]:
    """(vectors (n, dim) float64, known (n,) bool): each word's mean piece embedding; unknown = a piece is <unk>."""
    vectors = np.zeros((len(words), embeddings.size(1)))
    known = np.zeros(len(words), dtype=bool)
    table = embeddings.detach().double().numpy()
    for i, ids in enumerate(piece_ids(words, sp, dictionary)):
        if ids and dictionary.unk() not in ids:
            vectors[i] = table[ids].mean(axis=0)
            known[i] = True
    return vectors, known


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)


@dataclass
class WordScores:
    """The table's numbers for one model: translation pairs used, their mean cosine and L2 distance, the mean
    cosine of shuffled pairs, the mean cosine of the pairs whose words share no piece (no shared rows: only
    what training aligned), and the SemEval'17 Pearson (x 100) with its pairs (None without SemEval data)."""

    pairs: int
    cosine: float
    l2: float
    shuffled_cosine: float
    disjoint_pairs: int = 0
    disjoint_cosine: float = float("nan")
    pearson: Optional[float] = None
    semeval_pairs: int = 0


def score_translations(src: np.ndarray, tgt: np.ndarray, seed: int = 0) -> Tuple[float, float, float]:
    """(mean cosine, mean L2 distance, mean cosine of a fixed derangement of the targets) over pairs."""
    rng = np.random.default_rng(seed)
    n = len(src)
    shift = (np.arange(n) + 1 + rng.integers(0, max(n - 1, 1))) % n if n > 1 else np.arange(n)
    # a cyclic shift by 1..n-1 pairs every source word with another word's translation
    return (float(_cosine(src, tgt).mean()), float(np.linalg.norm(src - tgt, axis=1).mean()),
            float(_cosine(src, tgt[shift]).mean()))


def semeval_pearson(a: np.ndarray, b: np.ndarray, gold: Sequence[float]) -> float:
    """Pearson's r (x 100, scipy) between the pairs' cosine similarities and the human scores."""
    from scipy.stats import pearsonr

    return 100.0 * float(pearsonr(_cosine(a, b), np.asarray(gold, dtype=np.float64))[0])


def evaluate_table(embeddings: torch.Tensor, sp, dictionary, pairs: Sequence[Tuple[str, str]],
                   semeval: Optional[Sequence[Tuple[str, str, float]]] = None) -> WordScores:
    """The table's row for one embedding table: translation pairs (and SemEval'17 pairs) with known words."""
    src, src_ok = word_vectors([p[0] for p in pairs], embeddings, sp, dictionary)
    tgt, tgt_ok = word_vectors([p[1] for p in pairs], embeddings, sp, dictionary)
    ok = src_ok & tgt_ok
    if not ok.any():
        raise ValueError("no dictionary pair has both words in the model's vocabulary")
    cosine, l2, shuffled = score_translations(src[ok], tgt[ok])
    scores = WordScores(int(ok.sum()), cosine, l2, shuffled)
    shared = np.array([bool(set(a) & set(b)) for a, b in zip(piece_ids([p[0] for p in pairs], sp, dictionary),
                                                             piece_ids([p[1] for p in pairs], sp, dictionary))])
    disjoint = ok & ~shared
    if disjoint.any():
        scores.disjoint_pairs = int(disjoint.sum())
        scores.disjoint_cosine = float(_cosine(src[disjoint], tgt[disjoint]).mean())
    if semeval:
        a, a_ok = word_vectors([s[0] for s in semeval], embeddings, sp, dictionary)
        b, b_ok = word_vectors([s[1] for s in semeval], embeddings, sp, dictionary)
        keep = a_ok & b_ok
        scores.pearson = semeval_pearson(a[keep], b[keep], [s[2] for s, k in zip(semeval, keep) if k])
        scores.semeval_pairs = int(keep.sum())
    return scores


def mean_std(values: Sequence[float]) -> str:
    """'mean ± std' (sample std over seeds; one value alone: no ±)."""
    values = list(values)
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.3f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.3f} ± {std:.3f}"
