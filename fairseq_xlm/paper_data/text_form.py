"""The authors' text form of one language, line by line (their tools/tokenize.sh, then
lowercase_and_remove_accent.py for the 15-language model), and a whole file of it over several processes.

    most languages  replace-unicode-punctuation | normalize-punctuation -l L | remove-non-printing-char |
                    tokenizer -no-escape -l L   (Moses; ``sacremoses`` with the corrections of
                    ``authors_bpe.authors_normalize``); ro also gets Sennrich's WMT16 normalise-romanian +
                    remove-diacritics, as their get-data-nmt.sh does for en-ro
    th              the Moses normalisation, then PyThaiNLP ``word_tokenize`` joined by spaces (their
                    segment_th.py; same library, its default engine)
    zh              ``jieba`` word segmentation, then the Moses normalisation (theirs: the Stanford segmenter
                    with the PKU model, a Java CRF tool not on PyPI; jieba is what HF's XLMTokenizer uses
                    instead, and the segmentations differ)
    ja              KyTea (``Mykytea``, their tool) when installed; else a clear error
    --lowercase     line.rstrip().lower(), NFD, combining marks (Mn) removed, lower() again

``tokenize_file`` cuts the input into chunks handed to a process pool (``imap``: order preserved) and writes
``OUT.tmp``, renamed when complete."""

import contextlib
import functools
import os
import re
import unicodedata
from multiprocessing import get_context
from typing import Iterator, List, Optional

from fairseq_xlm.data.utf8_text import utf8_line_count
from fairseq_xlm.errors import DataSourceError

CHUNK_LINES = 2000
# ISO 639-1 codes: what Wikipedia, OPUS and WMT name their languages with (three-letter codes are also allowed)
ISO_639_1 = set("""aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da
de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io
is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my
na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq
sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu""".split())


class TextFormError(DataSourceError):
    """A language or file the authors' text form cannot process; the message names it."""


def check_lang(lang: str, where: str) -> None:
    """A language code (ISO 639-1, or three lowercase letters), else TextFormError naming ``where``."""
    if not (lang in ISO_639_1 or re.fullmatch(r"[a-z]{3}", lang)):
        raise TextFormError(f"{where}: '{lang}' is not a language code (ISO 639-1 such as en, zh, or three "
                            f"lowercase letters)")


def lowercase_and_remove_accent(line: str) -> str:
    """The authors' lowercase_and_remove_accent.py on one line (without its newline)."""
    text = unicodedata.normalize("NFD", line.rstrip().lower())
    return "".join(c for c in text if unicodedata.category(c) != "Mn").lower()


class AuthorsTextForm:
    """Raw lines of ``lang`` -> the authors' tokenized (and for the 15-language model lowercased) lines."""

    def __init__(self, lang: str, lowercase: bool):
        import sacremoses

        check_lang(lang, "--langs")
        self.lang, self.lowercase = lang, lowercase
        self._norm = sacremoses.MosesPunctNormalizer(lang=lang)
        self._tok = sacremoses.MosesTokenizer(lang=lang)
        self._segment = {"zh": self._zh, "th": self._th, "ja": self._ja}.get(lang, self._moses)
        if lang == "ja":
            self._kytea()

    def _normalize(self, text: str) -> str:
        from fairseq_xlm.data.authors_bpe import authors_normalize

        return authors_normalize(text, self.lang, lambda t, _lang: self._norm.normalize(t))

    def _moses(self, text: str) -> str:
        text = self._normalize(text)
        if self.lang == "ro":
            from transformers.models.xlm.tokenization_xlm import romanian_preprocessing

            text = romanian_preprocessing(text)
        return " ".join(self._tok.tokenize(text, return_str=False, escape=False))

    def _th(self, text: str) -> str:
        from pythainlp.tokenize import word_tokenize

        return " ".join(word_tokenize(self._normalize(text)))

    def _zh(self, text: str) -> str:
        import jieba

        jieba.setLogLevel(60)
        return " ".join(self._normalize(" ".join(jieba.cut(text))).split())

    @functools.lru_cache(maxsize=1)
    def _kytea(self):
        try:
            import Mykytea
        except ImportError:
            raise TextFormError("ja: the authors segment Japanese with KyTea; install it and its Python wrapper "
                                "(pip install kytea, with the KyTea library and model) to prepare ja") from None
        return Mykytea.Mykytea("-notags")

    def _ja(self, text: str) -> str:
        return " ".join(self._kytea().getWS(self._normalize(text)))

    def line(self, text: str) -> str:
        """One raw line (no newline) in the authors' form."""
        out = self._segment(text)
        return lowercase_and_remove_accent(out) if self.lowercase else out


_FORM: Optional[AuthorsTextForm] = None


def _init(lang: str, lowercase: bool) -> None:
    global _FORM
    _FORM = AuthorsTextForm(lang, lowercase)


def _chunk(lines: List[str]) -> str:
    return "".join(_FORM.line(line) + "\n" for line in lines)


def _chunks(path: str, max_lines: int = 0) -> Iterator[List[str]]:
    with open(path, encoding="utf-8") as f:
        chunk: List[str] = []
        for n, line in enumerate(f, 1):
            if max_lines and n > max_lines:
                break
            chunk.append(line.rstrip("\n"))
            if len(chunk) == CHUNK_LINES:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def tokenize_file(src: str, dst: str, lang: str, lowercase: bool, workers: int = 1, max_lines: int = 0) -> int:
    """``src`` (raw, one sentence per line; its first ``max_lines`` if > 0, as the authors' ``head -n``) ->
    ``dst`` in the authors' form with ``workers`` processes; order kept. Returns the number of lines."""
    from fairseq_xlm.paper_data import crash_point

    check_lang(lang, src)
    _check_utf8(src)
    tmp, n = f"{dst}.tmp", 0
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            if workers == 1:
                _init(lang, lowercase)
                for chunk in _chunks(src, max_lines):
                    out.write(_chunk(chunk))
                    n += len(chunk)
                    crash_point("tokenize")
            else:
                # fork: the children inherit the imported libraries; imap keeps the chunks in input order
                with get_context("fork").Pool(workers, _init, (lang, lowercase)) as pool:
                    for text in pool.imap(_chunk, _chunks(src, max_lines), chunksize=1):
                        out.write(text)
                        n += text.count("\n")
                        crash_point("tokenize")
        os.replace(tmp, dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    return n


def _check_utf8(path: str) -> None:
    if not os.path.isfile(path):
        raise TextFormError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise TextFormError(f"{path}: empty file")
    utf8_line_count(path, TextFormError)
