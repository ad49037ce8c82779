"""Readers for the natural language inference files of XNLI (Conneau et al., 2018) and MultiNLI 1.0.

    XNLI-1.0/xnli.{dev,test}.tsv        tab-separated with a header; columns include ``language``,
                                        ``gold_label``, ``sentence1``, ``sentence2`` (15 languages)
    multinli_1.0_train.jsonl            one JSON object a line: ``gold_label``, ``sentence1``, ``sentence2``;
                                        rows labelled ``-`` (no annotator consensus) are dropped
    XNLI-MT-1.0/multinli/multinli.train.{lang}.tsv
                                        the machine-translated training sets (translate-train): header
                                        ``premise hypo label``, where the label is spelled ``contradictory``;
                                        Moses-tokenized ("geography ."), unlike the raw dev/test sentences

Every reader returns ``(examples, dropped)``; a malformed line raises ``NliFormatError`` naming the file
and the line number. The files are read without CSV quoting: XNLI sentences contain bare quotes.
"""

import json
import logging
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

NLI_LABELS = ("contradiction", "entailment", "neutral")
# XNLI-MT spells one label differently from MultiNLI/XNLI.
LABEL_ALIASES = {"contradictory": "contradiction"}
NO_CONSENSUS = "-"


class NliFormatError(ValueError):
    """A malformed or unexpected line in an NLI data file (the message names file and line)."""


@dataclass(frozen=True)
class NliExample:
    """A premise/hypothesis pair with its gold label and language code."""

    sentence1: str
    sentence2: str
    label: str
    language: str


def _lines(path: str) -> Iterator[Tuple[int, str]]:
    """(1-based line number, line without its end) of a UTF-8 text file; only '\\n' ends a line."""
    try:
        with open(path, encoding="utf-8", newline="\n") as f:
            for number, line in enumerate(f, start=1):
                yield number, line.rstrip("\n").rstrip("\r")
    except UnicodeDecodeError as err:
        raise NliFormatError(f"{path}: not UTF-8 text ({err})") from err


def _label(raw: str, path: str, number: int) -> Optional[str]:
    """The canonical label, None for the no-consensus '-', an error for anything else."""
    label = LABEL_ALIASES.get(raw.strip(), raw.strip())
    if label == NO_CONSENSUS:
        return None
    if label not in NLI_LABELS:
        raise NliFormatError(
            f"{path}:{number}: unknown label {raw!r} (expected one of {', '.join(NLI_LABELS)}, or '-')"
        )
    return label


def _read_tsv(path: str, required: Sequence[str]) -> Iterator[Tuple[int, Dict[str, str]]]:
    """Rows of a headed TSV as dicts; every row must have exactly as many fields as the header."""
    rows = _lines(path)
    try:
        _, header_line = next(rows)
    except StopIteration:
        raise NliFormatError(f"{path}: empty file (expected a header with {', '.join(required)})") from None
    header = header_line.split("\t")
    missing = [c for c in required if c not in header]
    if missing:
        raise NliFormatError(f"{path}:1: header lacks column(s) {missing} (found {header})")
    for number, line in rows:
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise NliFormatError(
                f"{path}:{number}: malformed row: {len(fields)} tab-separated fields, the header has {len(header)}"
            )
        yield number, dict(zip(header, fields))


def _example(s1: str, s2: str, label: Optional[str], language: str) -> Optional[NliExample]:
    """The example, or None when it is dropped (no gold label or an empty sentence)."""
    s1, s2 = s1.strip(), s2.strip()
    if label is None or not s1 or not s2:
        return None
    return NliExample(s1, s2, label, language)


def _collect(path: str, candidates: Iterator[Optional[NliExample]]) -> Tuple[List[NliExample], int]:
    """(kept examples, number dropped) of a reader's candidates (None = dropped); logs both counts."""
    examples, dropped = [], 0
    for ex in candidates:
        if ex is None:
            dropped += 1
        else:
            examples.append(ex)
    logger.info("%s: %d examples, %d rows dropped (no gold label or empty sentence)", path, len(examples), dropped)
    return examples, dropped


def read_xnli_tsv(path: str, langs: Optional[Sequence[str]] = None) -> Tuple[List[NliExample], int]:
    """Examples of ``xnli.dev.tsv`` / ``xnli.test.tsv`` (of ``langs`` only, when given) and the number of
    rows dropped (no-consensus label or empty sentence). A language of ``langs`` absent from the file is an
    error: its dev/test set would silently be missing from the table."""

    def candidates():
        seen = set()
        for number, row in _read_tsv(path, ("language", "gold_label", "sentence1", "sentence2")):
            language = row["language"].strip()
            if not language:
                raise NliFormatError(f"{path}:{number}: empty language field")
            seen.add(language)
            if langs is None or language in langs:
                yield _example(row["sentence1"], row["sentence2"], _label(row["gold_label"], path, number), language)
        absent = [lang for lang in langs or () if lang not in seen]
        if absent:
            raise NliFormatError(f"{path}: no rows for language(s) {absent} (the file has {sorted(seen)})")

    return _collect(path, candidates())


def read_multinli_jsonl(path: str, language: str = "en") -> Tuple[List[NliExample], int]:
    """Examples of ``multinli_1.0_train.jsonl`` (English) and the number of rows dropped ('-' labels)."""

    def candidates():
        for number, line in _lines(path):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise NliFormatError(
                    f"{path}:{number}: malformed JSON line ({err.msg} at column {err.colno})") from None
            if not isinstance(row, dict):
                raise NliFormatError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in ("gold_label", "sentence1", "sentence2") if not isinstance(row.get(k), str)]
            if missing:
                raise NliFormatError(f"{path}:{number}: missing or non-string field(s) {missing}")
            yield _example(row["sentence1"], row["sentence2"], _label(row["gold_label"], path, number), language)

    return _collect(path, candidates())


def read_xnli_mt_tsv(path: str, language: str, detokenize: bool = True) -> Tuple[List[NliExample], int]:
    """Examples of a translate-train file ``multinli.train.{lang}.tsv`` (columns premise, hypo, label).

    Its sentences are Moses-tokenized while XNLI dev/test and the pretraining text are raw, and sentencepiece
    splits "agua ." and "agua." differently; so they are detokenized (sacremoses, rules of ``language``) to
    the raw form. The authors went the other way (Moses-tokenizing dev/test): their BPE was learned on
    tokenized text, ours on raw text."""
    untok = _detokenizer(language) if detokenize else (lambda text: text)
    return _collect(path, (
        _example(untok(row["premise"]), untok(row["hypo"]), _label(row["label"], path, number), language)
        for number, row in _read_tsv(path, ("premise", "hypo", "label"))
    ))


def _detokenizer(language: str):
    """Moses detokenization of a space-tokenized sentence (also undoes Moses' &quot; style escapes)."""
    from sacremoses import MosesDetokenizer

    moses = MosesDetokenizer(lang=language)
    return lambda text: moses.detokenize(text.split())


def by_language(examples: Sequence[NliExample]) -> Dict[str, List[NliExample]]:
    """Group examples by language, keeping file order inside each language."""
    out: Dict[str, List[NliExample]] = {}
    for ex in examples:
        out.setdefault(ex.language, []).append(ex)
    return out

