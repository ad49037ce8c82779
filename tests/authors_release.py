"""A fixture-sized "release" of the authors, made the way theirs were made, without downloads.

    perl_moses(lines, lang)               the authors' tokenize.sh run with Moses' perl scripts (an oracle)
    moses_words(lines, lang, lowercase)   Moses-tokenized words (sacremoses, -no-escape; + their lowercasing)
    learn_bpe(word_lines, merges)         fastBPE-format codes ``left right count`` and the vocabulary
                                          ``word count`` (``@@`` on continuing pieces) of the segmented text
    make_release(out, lines, langs, ...)  codes + vocab files and a random authors' ``TransformerModel`` saved
                                          as their .pth (model, dico_*, params), built with their own code

The BPE learner is the textbook one (Sennrich et al. 2016, as fastBPE's ``learnbpe``): count words, split
into characters with ``</w>`` on the last, repeatedly merge the most frequent adjacent pair. It is a fixture
maker, not an oracle: tests/test_authors_bpe.py checks our application of the codes against fastBPE itself.
"""

import sys
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

AUTHORS = Path(__file__).resolve().parents[2] / "shared" / "anchors" / "xlm-authors"


def strip_accents_lower(word: str) -> str:
    """The authors' lowercase_and_remove_accent.py on one token: lowercase, NFD, drop combining marks."""
    text = unicodedata.normalize("NFD", word.lower())
    return "".join(c for c in text if unicodedata.category(c) != "Mn").lower()


def perl_moses(lines, lang, tokenize=True):
    """The authors' tokenize.sh with Moses' perl scripts (as packaged by ``mosestokenizer``; skips without perl):
    replace-unicode-punctuation (HF's port; the perl script is not in mosestokenizer) | normalize-punctuation
    | remove-non-printing-char | tokenizer -no-escape, the perl scripts."""
    import re
    import shutil
    import subprocess

    import pytest
    from transformers.models.xlm.tokenization_xlm import replace_unicode_punct

    mosestokenizer = pytest.importorskip("mosestokenizer")
    if shutil.which("perl") is None:
        pytest.skip("perl is not installed")
    scripts = Path(mosestokenizer.__file__).parent
    text = "".join(replace_unicode_punct(line) + "\n" for line in lines)
    text = subprocess.run(["perl", scripts / "normalize-punctuation.perl", "-l", lang], input=text,
                          capture_output=True, text=True, check=True).stdout
    text = "".join(" " if unicodedata.category(c).startswith("C") and c != "\n" else c for c in text)
    if not tokenize:
        return text.splitlines()
    text = subprocess.run(["perl", scripts / "tokenizer-v1.1.perl", "-q", "-l", lang, "-no-escape"], input=text,
                          capture_output=True, text=True, check=True).stdout
    # tokenizer-v1.1 predates Moses' fix for a sentence-final ".'", which the authors' tokenizer.perl has
    return [re.sub(r"\.' ?$", " . ' ", line).strip() for line in text.splitlines()]


def moses_words(lines: Sequence[str], lang: str, lowercase: bool) -> List[List[str]]:
    """Moses punctuation normalization + tokenization without escaping, as the authors' tokenize.sh."""
    import sacremoses

    norm, tok = sacremoses.MosesPunctNormalizer(lang=lang), sacremoses.MosesTokenizer(lang=lang)
    out = []
    for line in lines:
        words = tok.tokenize(norm.normalize(line), escape=False)
        out.append([strip_accents_lower(w) for w in words] if lowercase else words)
    return out


def learn_bpe(word_lines: Sequence[Sequence[str]], merges: int) -> Tuple[List[Tuple[str, str, int]],
                                                                         List[Tuple[str, int]]]:
    """(codes, vocab) in the authors' formats from tokenized text."""
    counts = Counter(w for words in word_lines for w in words)
    segs: Dict[str, Tuple[str, ...]] = {w: tuple(w[:-1]) + (w[-1] + "</w>",) for w in counts}
    pairs: Counter = Counter()
    where: Dict[Tuple[str, str], set] = defaultdict(set)  # pair -> words holding it
    for w, seg in segs.items():
        for pair in zip(seg, seg[1:]):
            pairs[pair] += counts[w]
            where[pair].add(w)
    codes = []
    while len(codes) < merges and pairs:
        (a, b), n = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        if n <= 0:
            break
        codes.append((a, b, n))
        for w in list(where.pop((a, b), ())):
            seg = segs[w]
            for pair in zip(seg, seg[1:]):
                pairs[pair] -= counts[w]
            merged, i = [], 0
            while i < len(seg):
                if i + 1 < len(seg) and seg[i] == a and seg[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(seg[i])
                    i += 1
            segs[w] = tuple(merged)
            for pair in zip(merged, merged[1:]):
                pairs[pair] += counts[w]
                where[pair].add(w)
        pairs.pop((a, b), None)
    vocab: Counter = Counter()
    for w, seg in segs.items():
        for piece in seg:
            vocab[piece[:-4] if piece.endswith("</w>") else piece + "@@"] += counts[w]
    return codes, sorted(vocab.items(), key=lambda kv: (-kv[1], kv[0]))


def write_codes_vocab(out: Path, codes, vocab) -> Tuple[Path, Path]:
    """out/codes and out/vocab in fastBPE's formats."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "codes").write_text("".join(f"{a} {b} {n}\n" for a, b, n in codes), encoding="utf-8")
    (out / "vocab").write_text("".join(f"{w} {n}\n" for w, n in vocab), encoding="utf-8")
    return out / "codes", out / "vocab"


def authors_modules():
    """The authors' Dictionary and TransformerModel (their trainer is not imported: it needs apex)."""
    import pytest

    if not (AUTHORS / "xlm" / "model" / "transformer.py").is_file():
        pytest.skip(f"the authors' code is not at {AUTHORS}")
    if str(AUTHORS) not in sys.path:
        sys.path.insert(0, str(AUTHORS))
    from xlm.data.dictionary import Dictionary
    from xlm.model.transformer import TransformerModel

    return Dictionary, TransformerModel


def make_release(out: Path, texts: Dict[str, Sequence[str]], lowercase: bool, merges: int = 300,
                 emb_dim: int = 32, n_layers: int = 2, n_heads: int = 4, seed: int = 0) -> Dict[str, Path]:
    """codes, vocab and model.pth of a random authors' MLM over ``texts`` ({lang: raw lines})."""
    import argparse

    import torch

    Dictionary, TransformerModel = authors_modules()
    langs = list(texts)
    words = [w for lang in langs for w in moses_words(texts[lang], lang, lowercase)]
    codes_path, vocab_path = write_codes_vocab(out, *learn_bpe(words, merges))
    dico = Dictionary.read_vocab(str(vocab_path))
    params = argparse.Namespace(
        n_langs=len(langs), n_words=len(dico), eos_index=dico.eos_index, pad_index=dico.pad_index,
        id2lang=dict(enumerate(langs)), lang2id={lang: i for i, lang in enumerate(langs)}, use_lang_emb=True,
        emb_dim=emb_dim, n_layers=n_layers, n_heads=n_heads, dropout=0.1, attention_dropout=0.1,
        gelu_activation=True, sinusoidal_embeddings=False, share_inout_emb=True, asm=False,
        mask_index=dico.index("<special1>"), mlm_steps=[(lang, None) for lang in langs], clm_steps=[],
    )
    torch.manual_seed(seed)
    model = TransformerModel(params, dico, is_encoder=True, with_output=True)
    with torch.no_grad():  # LayerNorm = identity and zero biases at init would hide swapped parameters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    torch.save({"model": model.state_dict(), "dico_id2word": dico.id2word, "dico_word2id": dico.word2id,
                "dico_counts": dico.counts, "params": dict(vars(params))}, out / "model.pth")
    return {"codes": codes_path, "vocab": vocab_path, "pth": out / "model.pth"}
