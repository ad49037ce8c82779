"""The paper's word-embedding evaluation: MUSE, SemEval'17 and dictd (FreeDict) readers on small files, a word's
vector as the mean of its sentencepiece pieces' embeddings, and the scores on hand-made vectors."""

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch

from fairseq_xlm.data import layout
from fairseq_xlm.word_embeddings import (evaluate_table, mean_std, piece_ids, read_freedict, read_muse_dictionary,
                                         read_semeval, score_translations, semeval_pearson, word_vectors)

FIXTURES = Path(__file__).parent / "fixtures" / "word_embeddings"
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64(n: int) -> str:
    out = ""
    while True:
        out = B64[n % 64] + out
        n //= 64
        if not n:
            return out


def test_muse_and_semeval_readers(tmp_path):
    assert read_muse_dictionary(str(FIXTURES / "en-es.muse.txt")) == [
        ("house", "casa"), ("water", "agua"), ("light", "luz"), ("king", "rey")]
    assert read_semeval(str(FIXTURES / "en-es.semeval.data.txt"), str(FIXTURES / "en-es.semeval.gold.txt"))[1] == (
        "water", "luz", 0.5)
    (tmp_path / "bad.txt").write_text("house casa\nthree words here\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: expected 'source target'"):
        read_muse_dictionary(str(tmp_path / "bad.txt"))
    (tmp_path / "gold.txt").write_text("1.0\n")
    with pytest.raises(ValueError, match="4 pairs but .*gold.txt has 1 scores"):
        read_semeval(str(FIXTURES / "en-es.semeval.data.txt"), str(tmp_path / "gold.txt"))


def test_freedict_reader_on_a_hand_made_dictd_file(tmp_path):
    entries = [("00databaseshort", "English-Spanish\n"), ("a", "a /ə/\n1. a, en\n2. un, una\n"),
               ("a", "a /ədei/\naldía\n"), ("abbey", "abbey /əbei/\nabadía\n"),
               ("abate", "abate /əbeit/\n1. calmarse, sosegarse\n2. amainar\n3. al cabo, Calmarse\n"),
               ("x-ray", "x-ray /x/\nradiografía\n")]
    body, index = b"", []
    for head, text in entries:
        data = text.encode("utf-8")
        index.append(f"{head}\t{b64(len(body))}\t{b64(len(data))}\n")
        body += data
    with gzip.open(tmp_path / "d.dict.dz", "wb") as f:
        f.write(body)
    (tmp_path / "d.index").write_text("".join(index), encoding="utf-8")
    # 'a' has two entries (the second is the phrase "a day"): left out; phrases and x-ray too; repeats once
    assert read_freedict(str(tmp_path / "d.index"), str(tmp_path / "d.dict.dz")) == [
        ("abbey", "abadía"), ("abate", "calmarse"), ("abate", "sosegarse"), ("abate", "amainar")]


def test_word_vector_is_the_mean_of_its_pieces_embeddings(bible_databin):
    sp = spm.SentencePieceProcessor(model_file=str(bible_databin / "spm.model"))
    dictionary = layout.load_dictionary(str(bible_databin))
    table = torch.randn(len(dictionary), 8, generator=torch.Generator().manual_seed(0))
    words = ["beginning", "principio", "zzqxj", "\u4e2d"]
    pieces = [sp.encode(w, out_type=str) for w in words]
    assert len(pieces[0]) >= 1 and len(pieces[2]) >= 2  # a rare word is several pieces
    vectors, known = word_vectors(words, table, sp, dictionary)
    for i in (0, 1, 2):
        ids = [dictionary.index(p) for p in pieces[i]]
        assert known[i] and np.allclose(vectors[i], table[ids].double().mean(0).numpy())
    assert not known[3]  # a character the BPE never saw: <unk>, no vector


def test_scores_on_hand_made_vectors():
    src = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    tgt = np.array([[1.0, 0.0], [0.0, -2.0], [4.0, 3.0]])
    cosine, l2, shuffled = score_translations(src, tgt)
    assert cosine == pytest.approx((1 - 1 + 24 / 25) / 3)
    assert l2 == pytest.approx((0 + 4 + math.sqrt(2)) / 3)
    # every source word against another word's translation (a cyclic shift of the targets)
    shifts = [(np.roll(np.arange(3), -k)) for k in (1, 2)]
    candidates = [np.mean([src[i] @ tgt[j] / np.linalg.norm(src[i]) / np.linalg.norm(tgt[j])
                           for i, j in enumerate(s)]) for s in shifts]
    assert any(shuffled == pytest.approx(c) for c in candidates)
    # Pearson of cosines (1, -1, 0.96) with gold (4, 0, 3.75) by hand
    cos, gold = np.array([1, -1, 24 / 25]), np.array([4.0, 0.0, 3.75])
    dc, dg = cos - cos.mean(), gold - gold.mean()
    assert semeval_pearson(src, tgt, gold) == pytest.approx(100 * (dc @ dg) / math.sqrt((dc @ dc) * (dg @ dg)))
    assert mean_std([1.0, 2.0, 3.0]) == "2.000 ± 1.000" and mean_std([0.5]) == "0.500"


def test_evaluate_table_leaves_out_unknown_words(bible_databin):
    sp = spm.SentencePieceProcessor(model_file=str(bible_databin / "spm.model"))
    dictionary = layout.load_dictionary(str(bible_databin))
    table = torch.randn(len(dictionary), 8, generator=torch.Generator().manual_seed(1))
    pairs = read_muse_dictionary(str(FIXTURES / "en-es.muse.txt")) + [("\u4e2d", "casa")]
    semeval = read_semeval(str(FIXTURES / "en-es.semeval.data.txt"), str(FIXTURES / "en-es.semeval.gold.txt"))
    scores = evaluate_table(table, sp, dictionary, pairs, semeval)
    assert scores.pairs == 4 and scores.semeval_pairs == 4
    src, _ = word_vectors([p[0] for p in pairs[:4]], table, sp, dictionary)
    tgt, _ = word_vectors([p[1] for p in pairs[:4]], table, sp, dictionary)
    assert scores.cosine == pytest.approx(score_translations(src, tgt)[0])
    # pairs whose words share no piece: their own mean cosine
    ids = [(set(a), set(b)) for a, b in zip(*(piece_ids([p[k] for p in pairs[:4]], sp, dictionary) for k in (0, 1)))]
    disjoint = [i for i, (a, b) in enumerate(ids) if not a & b]
    assert scores.disjoint_pairs == len(disjoint) > 0
    cos = [src[i] @ tgt[i] / np.linalg.norm(src[i]) / np.linalg.norm(tgt[i]) for i in disjoint]
    assert scores.disjoint_cosine == pytest.approx(np.mean(cos))
    assert -100 <= scores.pearson <= 100
