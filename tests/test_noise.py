"""Denoising noise: the token unit equals the authors' Trainer.add_noise; the word unit keeps ▁ and @@ words
whole; both </s> never move; bad input fails clearly."""

import math
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fairseq.data import Dictionary, ListDataset
from fairseq_xlm.data.noise import FASTBPE, SENTENCEPIECE, WordBoundaries, WordNoiseDataset, add_noise

W = SENTENCEPIECE
SHARED = Path(__file__).resolve().parents[2] / "shared"
MASK = "<mask>"


def authors_trainer():
    """The authors' Trainer class (their trainer.py imports apex at import time: stub it)."""
    anchor = SHARED / "anchors" / "xlm-authors"
    if not (anchor / "xlm" / "trainer.py").is_file():
        pytest.skip(f"the authors' code is not at {anchor}")
    sys.modules.setdefault("apex", types.ModuleType("apex"))
    if str(anchor) not in sys.path:
        sys.path.insert(0, str(anchor))
    from xlm.trainer import Trainer
    return Trainer


@pytest.fixture
def keep_global_numpy_rng():
    state = np.random.get_state()
    yield
    np.random.set_state(state)


# ------------------------------------------------------------------------ token unit vs the authors
@pytest.mark.parametrize("shuffle,dropout,blank", [(3, 0.1, 0.1), (1.5, 0.5, 0.5), (5, 0.95, 0.3),
                                                   (0, 0.3, 0), (3, 0, 0.6), (3, 0, 0)])
def test_token_unit_equals_authors_add_noise(keep_global_numpy_rng, shuffle, dropout, blank):
    Trainer = authors_trainer()
    eos, pad, mask = 1, 2, 9
    me = SimpleNamespace(params=SimpleNamespace(word_shuffle=shuffle, word_dropout=dropout, word_blank=blank,
                                                eos_index=eos, pad_index=pad, mask_index=mask))
    for name in ("word_shuffle", "word_dropout", "word_blank"):
        setattr(me, name, getattr(Trainer, name).__get__(me))
    rng = np.random.RandomState(12345)
    changed = rescued = 0
    for seed in range(300):
        body = rng.randint(10, 60, size=rng.randint(1, 25))  # >= 1 token: the authors fail on an empty one
        sentence = np.concatenate([[eos], body, [eos]])
        x = torch.from_numpy(sentence).long().unsqueeze(1)  # (slen, 1)
        np.random.seed(seed)
        x2, l2 = Trainer.add_noise(me, x, torch.LongTensor([len(sentence)]))
        theirs = x2[: int(l2[0]), 0].tolist()
        theirs_state = np.random.get_state()
        ours_rng = np.random.RandomState(seed)
        ours = add_noise(sentence, None, eos, mask, shuffle, dropout, blank, ours_rng)
        assert ours.tolist() == theirs, f"seed {seed}"
        ours_state = ours_rng.get_state()  # the same numbers were drawn, no more, no fewer
        assert np.array_equal(ours_state[1], theirs_state[1]) and ours_state[2] == theirs_state[2]
        changed += ours.tolist() != sentence.tolist()
        rescued += len(ours) == 3 and len(sentence) > 3
    assert changed > 0 or shuffle == dropout == blank == 0
    if dropout >= 0.9:
        assert rescued > 50  # the "keep one random token" path was taken (and matched)


def test_token_unit_never_moves_eos_and_moves_fewer_than_k():
    rng = np.random.RandomState(0)
    largest = 0
    for _ in range(500):
        body = np.arange(10, 10 + rng.randint(0, 20))
        out = add_noise(np.concatenate([[1], body, [1]]), None, 1, 3, 3.0, 0, 0, rng)
        assert out[0] == 1 and out[-1] == 1 and sorted(out[1:-1]) == list(body)
        moves = [abs(int(t) - 10 - i) for i, t in enumerate(out[1:-1])]
        largest = max([largest] + moves)
    assert largest == 2


# ------------------------------------------------------------------------------ word boundaries
def spm_dict(n_words=60):
    """Word w is [▁w, wa, wb][:size]; distinct pieces per word so that the output can be parsed back."""
    d = Dictionary()
    words = {}
    for w in range(n_words):
        pieces = [W + f"w{w}", f"w{w}a", f"w{w}b"]
        words[w] = [d.add_symbol(p) for p in pieces]
    d.add_symbol(MASK)
    return d, words


def bpe_dict(n_words=60):
    """Word w is [w{w}p0@@, w{w}p1@@][:size - 1] + [w{w}]: fastBPE continuation marks."""
    d = Dictionary()
    words = {}
    for w in range(n_words):
        words[w] = [d.add_symbol(f"w{w}p0@@"), d.add_symbol(f"w{w}p1@@"), d.add_symbol(f"w{w}")]
    d.add_symbol(MASK)
    return d, words


def word_pieces(kind, pieces, size):
    return pieces[:size] if kind == "spm" else pieces[3 - size:]  # @@ words end with their last token


def test_word_ids_for_sentencepiece_and_fastbpe():
    d = Dictionary()
    for s in [W + "the", W + "cat", "s", "ting", MASK]:
        d.add_symbol(s)
    b = WordBoundaries.from_dictionary(d)
    assert b.marker == SENTENCEPIECE
    ids = lambda syms: b.word_ids(np.array([d.index(s) for s in syms])).tolist()  # noqa: E731
    assert ids([W + "the", W + "cat", "s", "ting", W + "cat"]) == [0, 1, 1, 1, 2]
    # specials are words of their own; a leading continuation piece opens a word
    assert ids(["s", "ting", MASK, "s", "<unk>", W + "cat"]) == [0, 0, 1, 2, 3, 4]

    d = Dictionary()
    for s in ["the", "ca@@", "t", "sit@@", "t@@", "ing", MASK]:
        d.add_symbol(s)
    b = WordBoundaries.from_dictionary(d)
    assert b.marker == FASTBPE
    ids = lambda syms: b.word_ids(np.array([d.index(s) for s in syms])).tolist()  # noqa: E731
    assert ids(["the", "ca@@", "t", "sit@@", "t@@", "ing", "the"]) == [0, 1, 1, 2, 2, 2, 3]
    assert ids(["ca@@", MASK, "t", "ca@@", "<unk>", "ca@@"]) == [0, 1, 2, 3, 4, 5]


def test_fastbpe_sentence_has_several_words_now():
    """Before, words began only at ▁ pieces: a fastBPE sentence was one "word" that noise could not move."""
    d = Dictionary()
    for s in ["the", "ca@@", "t", "sat", "on", "ma@@", "t"]:
        d.add_symbol(s)
    sentence = np.array([d.eos()] + [d.index(s) for s in ["the", "ca@@", "t", "sat", "on", "ma@@", "t"]]
                        + [d.eos()])
    b = WordBoundaries.from_dictionary(d)
    assert b.word_ids(sentence[1:-1]).max() + 1 == 5
    rng = np.random.RandomState(0)
    outs = {tuple(add_noise(sentence, b, d.eos(), d.unk(), 3.0, 0, 0, rng)) for _ in range(200)}
    assert len(outs) > 10
    ca, t, ma = d.index("ca@@"), d.index("t"), d.index("ma@@")
    for out in outs:  # every @@ token is still followed by its word's next token
        for i in np.flatnonzero((np.array(out) == ca) | (np.array(out) == ma)):
            assert out[i + 1] == t


def random_words(rng, words, kind, n):
    """A sentence </s> w... </s> of n distinct words of 1-3 tokens: (tokens, list of word token tuples)."""
    chosen = rng.choice(len(words), size=n, replace=False)
    sent = [tuple(word_pieces(kind, words[w], rng.randint(1, 4))) for w in chosen]
    return sent


def parse(out, sent, eos):
    """The output as indices into sent; fails if a word was cut, altered or an eos moved."""
    assert out[0] == eos and out[-1] == eos and eos not in out[1:-1]
    by_first = {w[0]: i for i, w in enumerate(sent)}
    result, pos, body = [], 0, list(out[1:-1])
    while pos < len(body):
        i = by_first[body[pos]]
        assert tuple(body[pos: pos + len(sent[i])]) == sent[i], "a word was cut"
        result.append(i)
        pos += len(sent[i])
    return result


def binomial_ok(hits, n, p, sigmas=4.0):
    return abs(hits / n - p) <= sigmas * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("kind", ["spm", "bpe"])
def test_word_unit_keeps_words_whole_moves_fewer_than_k_and_rates(kind):
    d, words = spm_dict() if kind == "spm" else bpe_dict()
    b = WordBoundaries.from_dictionary(d)
    assert b.marker == (SENTENCEPIECE if kind == "spm" else FASTBPE)
    eos, mask = d.eos(), d.index(MASK)
    rng = np.random.RandomState(3)
    largest = dropped = blanked = total = 0
    for _ in range(1500):
        sent = random_words(rng, words, kind, rng.randint(1, 15))
        tokens = np.array([eos] + [t for w in sent for t in w] + [eos])
        # shuffle only: a permutation of whole words, each moved fewer than k = 3 places
        order = parse(add_noise(tokens, b, eos, mask, 3.0, 0, 0, rng).tolist(), sent, eos)
        assert sorted(order) == list(range(len(sent)))
        largest = max([largest] + [abs(new - old) for new, old in enumerate(order)])
        # dropout only: whole words, in order, at least one left
        kept = parse(add_noise(tokens, b, eos, mask, 0, 0.1, 0, rng).tolist(), sent, eos)
        assert kept == sorted(kept) and len(kept) >= 1
        dropped += len(sent) - len(kept)
        # blank only: a word is blanked whole or kept; the length stays
        out = add_noise(tokens, b, eos, mask, 0, 0, 0.1, rng).tolist()
        assert len(out) == len(tokens) and out[0] == eos and out[-1] == eos
        pos = 1
        for w in sent:
            piece = out[pos: pos + len(w)]
            assert piece == [mask] * len(w) or tuple(piece) == w
            blanked += piece == [mask] * len(w)
            pos += len(w)
        total += len(sent)
    assert largest == 2
    assert binomial_ok(dropped, total, 0.1) and binomial_ok(blanked, total, 0.1)


@pytest.mark.parametrize("unit", ["token", "word"])
def test_all_noise_keeps_both_eos(unit):
    d, words = bpe_dict()
    b = WordBoundaries.from_dictionary(d) if unit == "word" else None
    rng = np.random.RandomState(4)
    for n in [0] + list(range(1, 12)) * 50:
        sent = random_words(rng, words, "bpe", n) if n else []
        tokens = np.array([d.eos()] + [t for w in sent for t in w] + [d.eos()])
        out = add_noise(tokens, b, d.eos(), d.index(MASK), 3.0, 0.5, 0.5, rng).tolist()
        assert out[0] == d.eos() and out[-1] == d.eos() and d.eos() not in out[1:-1]
        assert len(out) >= min(3, len(tokens))  # dropout keeps at least one unit of a non-empty sentence


# ------------------------------------------------------------------------------------- bad input
def test_bad_input_fails_clearly():
    d, _ = spm_dict(3)
    b = WordBoundaries.from_dictionary(d)
    ok = np.array([d.eos(), d.index(W + "w0"), d.eos()])
    rng = np.random.RandomState(0)
    with pytest.raises(ValueError, match="</s> s </s>"):
        add_noise(ok[1:], b, d.eos(), 3, 3.0, 0.1, 0.1, rng)  # fairseq's `s </s>`, no leading eos
    with pytest.raises(ValueError, match="</s> s </s>"):
        add_noise(ok[:1], None, d.eos(), 3, 3.0, 0.1, 0.1, rng)
    with pytest.raises(ValueError, match="shuffle must be 0"):
        add_noise(ok, None, d.eos(), 3, 0.5, 0.1, 0.1, rng)
    with pytest.raises(ValueError, match="dropout must be in"):
        add_noise(ok, None, d.eos(), 3, 3.0, 1.0, 0.1, rng)
    with pytest.raises(ValueError, match="blank must be in"):
        add_noise(ok, None, d.eos(), 3, 3.0, 0.1, -0.1, rng)
    with pytest.raises(ValueError, match="outside the dictionary"):
        add_noise(np.array([d.eos(), len(d) + 5, d.eos()]), b, d.eos(), 3, 3.0, 0.1, 0.1, rng)
    plain = Dictionary()
    plain.add_symbol("cat")
    with pytest.raises(ValueError, match="cannot find word boundaries"):
        WordBoundaries.from_dictionary(plain)
    with pytest.raises(ValueError, match="marker must be"):
        WordBoundaries.from_dictionary(plain, marker="</w>")
    assert WordBoundaries.from_dictionary(plain, marker=FASTBPE).word_ids(np.array([4, 4])).tolist() == [0, 1]
    with pytest.raises(ValueError, match="noise unit"):
        WordNoiseDataset(ListDataset([]), d, unit="char")


# ------------------------------------------------------------------------------------ the dataset
@pytest.mark.parametrize("unit", ["token", "word"])
def test_dataset_keeps_eos_and_is_deterministic_per_epoch(unit):
    d, words = spm_dict(5)
    sent = [t for w in range(5) for t in words[w]]
    tokens = torch.tensor(sent + [d.eos()])  # fairseq's `s </s>`
    mono = ListDataset([tokens] * 40, sizes=np.full(40, len(tokens)))
    noised = WordNoiseDataset(mono, d, 3.0, 0.2, 0.2, blank_idx=d.index(MASK), seed=7, unit=unit)
    first = [noised[i].tolist() for i in range(40)]
    assert all(x[-1] == d.eos() and d.eos() not in x[:-1] for x in first)
    assert first == [noised[i].tolist() for i in range(40)]
    assert len({tuple(x) for x in first}) > 5  # sentences get different noise
    # it is add_noise on `</s> s </s>` with the item's RandomState, leading eos removed
    expect = add_noise(np.concatenate([[d.eos()], tokens.numpy()]), noised.boundaries, d.eos(), d.index(MASK),
                       3.0, 0.2, 0.2, np.random.RandomState([7, 1, 0, 3]))  # (seed, epoch, pass, index)
    assert first[3] == expect[1:].tolist()
    noised.set_epoch(2)
    assert first != [noised[i].tolist() for i in range(40)]
    fixed = WordNoiseDataset(mono, d, 3.0, 0.2, 0.2, seed=7, vary_with_epoch=False, unit=unit)
    before = [fixed[i].tolist() for i in range(40)]
    fixed.set_epoch(5)
    assert before == [fixed[i].tolist() for i in range(40)]
