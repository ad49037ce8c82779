"""The authors' tokenization, which their released checkpoints expect: Moses punctuation normalization and
tokenization (``-no-escape``), for the XNLI-15 models lowercasing and accent stripping, then their fastBPE
codes with ``@@`` marking a piece that continues into the next one.

HF ``transformers``' ``XLMTokenizer`` implements exactly this pipeline (with ``sacremoses``, the maintained
Python port of the Moses scripts) from a ``vocab.json`` and a ``merges.txt``. A release's BPE codes file
(``a b count`` lines) is already a valid ``merges.txt``; its vocabulary (``word count`` lines, ``@@`` on
continuing pieces) becomes ``vocab.json`` in HF's spelling (``</w>`` on word-final pieces). A data-bin made
with the authors' BPE keeps these files in ``DATA/authors_bpe/``, a folder ``XLMTokenizer.from_pretrained``
also loads.
"""

import json
import os
import re
import shutil
import tempfile
import unicodedata
from typing import Dict, List, Sequence, Tuple

FOLDER = "authors_bpe"  # in a data-bin: vocab.json, merges.txt, tokenizer_config.json
SPECIALS = ["<s>", "</s>", "<pad>", "<unk>"] + [f"<special{i}>" for i in range(10)]  # the authors' ids 0-13
CONTINUE, END = "@@", "</w>"
# Languages segmented by other tools than Moses (``paper_data.text_form``: th PyThaiNLP, zh jieba, ja KyTea).
NOT_MOSES = {"zh", "th", "ja"}


class AuthorsBpeError(ValueError):
    """A codes / vocabulary file that is malformed or does not belong to the release; names the file."""


def read_codes(path: str) -> List[Tuple[str, str, int]]:
    """fastBPE codes: ``left right count`` per line, in merge order (``</w>`` ends a word)."""
    out, seen = [], set()
    for n, fields in enumerate(_lines(path), 1):
        if len(fields) != 3 or not fields[2].isdigit():
            raise AuthorsBpeError(f"{path}:{n}: expected 'left right count' (fastBPE codes), got {' '.join(fields)!r}")
        if (fields[0], fields[1]) in seen:
            raise AuthorsBpeError(f"{path}:{n}: the merge '{fields[0]} {fields[1]}' appears twice")
        seen.add((fields[0], fields[1]))
        out.append((fields[0], fields[1], int(fields[2])))
    if not out:
        raise AuthorsBpeError(f"{path}: no BPE merges")
    return out


def read_vocab(path: str) -> List[Tuple[str, int]]:
    """The authors' vocabulary: ``word count`` per line; ids are 14 + line number, as their ``read_vocab``."""
    out, seen = [], set()
    for n, fields in enumerate(_lines(path), 1):
        if len(fields) != 2 or not fields[1].isdigit():
            raise AuthorsBpeError(f"{path}:{n}: expected 'word count' (the authors' vocab), got {' '.join(fields)!r}")
        if fields[0] in seen or fields[0] in SPECIALS:
            raise AuthorsBpeError(f"{path}:{n}: '{fields[0]}' appears twice or is a special word")
        seen.add(fields[0])
        out.append((fields[0], int(fields[1])))
    if not out:
        raise AuthorsBpeError(f"{path}: no words")
    return out


def _lines(path: str):
    if not os.path.isfile(path):
        raise AuthorsBpeError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield line.rstrip("\n").split(" ")
    except UnicodeDecodeError as err:
        raise AuthorsBpeError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def hf_piece(word: str) -> str:
    """The authors' spelling -> HF's: ``ab@@`` -> ``ab``, ``ab`` -> ``ab</w>`` (specials unchanged)."""
    if word in SPECIALS:
        return word
    return word[: -len(CONTINUE)] if word.endswith(CONTINUE) else word + END


def authors_piece(piece: str) -> str:
    """HF's spelling -> the authors': the inverse of ``hf_piece``."""
    if piece in SPECIALS:
        return piece
    return piece[: -len(END)] if piece.endswith(END) else piece + CONTINUE


def check_codes(codes: Sequence[Tuple[str, str, int]], vocab: Sequence[Tuple[str, int]], codes_path: str,
                vocab_path: str, tolerance: float = 0.01) -> int:
    """Every piece of the vocabulary longer than one character was made by a merge of the codes (the vocabulary
    is counted on text the codes were applied to); more than ``tolerance`` of them unmade means the two files
    come from different BPE runs. Returns the number of unmade pieces."""
    made = {left + right for left, right, _ in codes}
    pieces = [hf_piece(w) for w, _ in vocab]
    multi = [p for p in pieces if len(p[: -len(END)] if p.endswith(END) else p) > 1]
    unmade = [p for p in multi if p not in made]
    if multi and len(unmade) > tolerance * len(multi):
        raise AuthorsBpeError(
            f"{codes_path}: {len(unmade)} of the {len(multi)} multi-character pieces of {vocab_path} are made by no "
            f"merge in it (e.g. {[authors_piece(p) for p in unmade[:3]]}): these codes are not the ones the "
            f"vocabulary was built with")
    return len(unmade)


def check_dictionary(vocab: Sequence[Tuple[str, int]], dict_symbols: Sequence[str], vocab_path: str,
                     dict_path: str) -> None:
    """The vocabulary must be the release's: fairseq's dictionary (converted dict.txt) holds the authors' 14
    specials (the mask renamed ``<mask>``) and then exactly these words in this order."""
    words = [w for w, _ in vocab]
    theirs = list(dict_symbols[len(SPECIALS):])
    for i, (mine, other) in enumerate(zip(words, theirs)):
        if mine != other:
            raise AuthorsBpeError(f"{vocab_path}:{i + 1}: '{mine}' but {dict_path} has '{other}' at id "
                                  f"{i + len(SPECIALS)}: this vocabulary is not the release's")
    if len(words) != len(theirs):
        raise AuthorsBpeError(f"{vocab_path}: {len(words)} words but {dict_path} has {len(theirs)} after the "
                              f"{len(SPECIALS)} specials: this vocabulary is not the release's")


def lowercase_hint(vocab: Sequence[Tuple[str, int]], lowercase_accents: bool) -> str:
    """A warning when --lowercase-accents looks wrong for this vocabulary ('' when it looks right): a release
    made from lowercased text has no uppercase piece, and lowercased text never yields its uppercase pieces."""
    upper = sum(any(c.isupper() for c in w) for w, _ in vocab)
    if lowercase_accents and upper > 0.01 * len(vocab):
        return (f"{upper} of {len(vocab)} vocabulary words have uppercase letters, which --lowercase-accents never "
                f"produces: was this release made from cased text?")
    if not lowercase_accents and upper == 0:
        return ("the vocabulary has no uppercase letter: the release was made from lowercased text (the XNLI-15 "
                "models); pass --lowercase-accents")
    return ""


def write_folder(codes_path: str, vocab_path: str, out_dir: str, lowercase_accents: bool) -> Dict[str, int]:
    """Check CODES and VOCAB, then write OUT_DIR (vocab.json, merges.txt, tokenizer_config.json) atomically."""
    codes, vocab = read_codes(codes_path), read_vocab(vocab_path)
    unmade = check_codes(codes, vocab, codes_path, vocab_path)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    try:
        ids = {piece: i for i, piece in enumerate(SPECIALS + [hf_piece(w) for w, _ in vocab])}
        with open(os.path.join(tmp, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(ids, f, ensure_ascii=False)
        with open(os.path.join(tmp, "merges.txt"), "w", encoding="utf-8") as f:
            f.writelines(f"{a} {b} {n}\n" for a, b, n in codes)  # XLMTokenizer drops an unterminated last line
        config = {"tokenizer_class": "XLMTokenizer", "do_lowercase_and_remove_accent": lowercase_accents,
                  "mask_token": "<special1>"}
        with open(os.path.join(tmp, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=1)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"merges": len(codes), "words": len(vocab), "unmade": unmade}


_BETWEEN_LETTERS, _LEFT_QUOTES = re.compile("([a-zA-Z])‘([a-zA-Z])"), re.compile("[‘‚]")


def authors_normalize(text: str, lang: str, punct_norm) -> str:
    """replace-unicode-punctuation, normalize-punctuation (``punct_norm(text, lang)``: sacremoses') and
    remove-non-printing-char as the authors' perl scripts do, where sacremoses and HF differ from them (found by
    tests/test_authors_bpe.py on real text)."""
    from transformers.models.xlm.tokenization_xlm import replace_unicode_punct

    text = replace_unicode_punct(text)  # replace-unicode-punctuation.perl
    # normalize-punctuation.perl writes " for a left single quote and a low-9 quote (' between letters);
    # sacremoses 0.2 writes ' for both
    text = _LEFT_QUOTES.sub('"', _BETWEEN_LETTERS.sub(r"\1'\2", text))
    text = punct_norm(text, lang)
    # remove-non-printing-char.perl turns every \p{C} character (tab, zero-width space) into a space;
    # HF deletes it, gluing the words around it
    return "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)


def _moses_tokenizer_class():
    """HF's XLMTokenizer with its Moses pre-processing made the authors' (``authors_normalize``)."""
    try:
        from transformers.models.xlm.tokenization_xlm import XLMTokenizer
    except ImportError as err:
        raise ImportError(f"the authors' BPE needs HF transformers and sacremoses (pip install "
                          f"'fairseq_xlm[authors]'): {err}") from err

    class MosesXlmTokenizer(XLMTokenizer):
        def moses_pipeline(self, text: str, lang: str) -> str:
            return authors_normalize(text, lang, self.moses_punct_norm)

    return MosesXlmTokenizer


class AuthorsBpe:
    """Raw text of one language -> the authors' BPE tokens (``hel@@ lo``), via HF's ``XLMTokenizer``."""

    def __init__(self, folder: str):
        paths = {name: os.path.join(folder, name) for name in ("vocab.json", "merges.txt", "tokenizer_config.json")}
        missing = [p for p in paths.values() if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"{missing[0]}: missing; {folder} must be made by prepare --bpe authors")
        with open(paths["tokenizer_config.json"], encoding="utf-8") as f:
            self.lowercase_accents = bool(json.load(f)["do_lowercase_and_remove_accent"])
        # no lang2id: languages are checked against the release by prepare, not logged per line by HF
        self.tokenizer = _moses_tokenizer_class()(paths["vocab.json"], paths["merges.txt"],
                                      do_lowercase_and_remove_accent=self.lowercase_accents)
        self.known = set(self.tokenizer.encoder)
        self._detok: Dict[str, object] = {}
        self._forms: Dict[str, object] = {}

    def pieces(self, line: str, lang: str) -> List[str]:
        """One line -> its tokens in the authors' spelling (the words of their vocab and of dict.txt)."""
        if lang in NOT_MOSES:  # their segmenters (zh: jieba for Stanford's; HF wants rjieba), then the codes
            form = self._forms.get(lang)
            if form is None:
                from fairseq_xlm.paper_data.text_form import AuthorsTextForm

                form = self._forms[lang] = AuthorsTextForm(lang, self.lowercase_accents)
            return [authors_piece(p) for word in form.line(line).split() for p in self.tokenizer.bpe(word).split(" ")]
        # _tokenize, not tokenize(): transformers 5's tokenize() does not pass ``lang`` on (Moses would use
        # English rules for every language) and keeps "<s>"-like text whole, which the authors' Moses splits.
        return [authors_piece(p) for p in self.tokenizer._tokenize(line, lang=lang)]

    def batch(self, lines: Sequence[str], lang: str) -> List[List[str]]:
        """``pieces`` of every line."""
        return [self.pieces(line, lang) for line in lines]

    def decode(self, pieces: Sequence[str], lang: str) -> str:
        """Tokens -> text: ``@@`` continuations joined, then Moses detokenization of ``lang`` (sacremoses);
        lowercasing and accent stripping stay."""
        import sacremoses

        words = " ".join(pieces).replace(CONTINUE + " ", "")
        words = words[: -len(CONTINUE)] if words.endswith(CONTINUE) else words
        if lang not in self._detok:
            self._detok[lang] = sacremoses.MosesDetokenizer(lang=lang)
        return self._detok[lang].detokenize(words.split())

    def unknown(self, pieces: Sequence[str]) -> int:
        """How many of ``pieces`` the vocabulary lacks (they binarize to <unk>)."""
        return sum(hf_piece(p) not in self.known for p in pieces)
