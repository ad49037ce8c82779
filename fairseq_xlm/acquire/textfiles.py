"""Writing the plain-text outputs: atomic (``.tmp`` + rename), skipped when done, one clean line per item.

A reader of our outputs may split lines with Python's universal newlines (``\\r`` too) or ``str.splitlines``
(``\\x85``, ``\\u2028``, ...), and a parallel corpus is only usable while both sides split the same way; so
every character that some reader takes as a line break is replaced by a space, and lines that are empty or
only white space are dropped (a parallel pair is dropped when either side is).
"""

import codecs
import io
import logging
import os
import time
from contextlib import ExitStack, contextmanager
from itertools import zip_longest
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, TextIO

from fairseq_xlm.errors import DataSourceError

logger = logging.getLogger("fairseq_xlm.acquire")

# Line breaks of str.splitlines() other than "\n" itself (which ends our lines).
_BREAKS = str.maketrans({c: " " for c in "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})


class _Replacements:
    """A codecs error handler that replaces invalid UTF-8 by U+FFFD and counts how often it did."""

    count = 0

    @classmethod
    def handler(cls, err):
        cls.count += 1
        return "\ufffd", err.end


codecs.register_error("fairseq_xlm_acquire", _Replacements.handler)


def clean_line(line: str) -> Optional[str]:
    """One raw line (with or without its ``\\n``) -> the line we write, or None when it is blank."""
    line = line.rstrip("\n").translate(_BREAKS)
    return line if line.strip() else None


def text_lines(binary: io.RawIOBase, name: str) -> Iterator[str]:
    """Decoded lines of a binary stream split at ``\\n`` only; invalid UTF-8 becomes U+FFFD (logged by name)."""
    before = _Replacements.count
    yield from io.TextIOWrapper(binary, encoding="utf-8", errors="fairseq_xlm_acquire", newline="\n")
    bad = _Replacements.count - before
    if bad:
        logger.warning("%s: %d invalid UTF-8 sequences replaced by U+FFFD", name, bad)


class Progress:
    """Logs ``NAME: N lines so far`` at most every EVERY seconds (long extractions show they advance)."""

    def __init__(self, name: str, every: float = 60.0):
        self.name, self.every, self.last = name, every, time.time()

    def tick(self, n: int) -> None:
        if n % 4096 == 0 and time.time() - self.last >= self.every:
            self.last = time.time()
            logger.info("%s: %d lines so far", self.name, n)


def done(paths: Sequence[str]) -> bool:
    """True when every output exists (they are only ever renamed into place once complete)."""
    return all(os.path.isfile(p) for p in paths)


@contextmanager
def atomic_outputs(paths: Sequence[str]) -> Iterator[List[TextIO]]:
    """Open ``path.tmp`` for each path; on success fsync and rename each into place, on error remove them.

    A kill leaves only ``.tmp`` files, which the next run truncates and rewrites."""
    for path in paths:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmps = [f"{p}.tmp" for p in paths]
    with ExitStack() as stack:
        files = [stack.enter_context(open(t, "w", encoding="utf-8", newline="\n")) for t in tmps]
        try:
            yield files
            for f in files:
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            stack.close()
            for t in tmps:
                if os.path.exists(t):
                    os.remove(t)
            raise
    for tmp, path in zip(tmps, paths):
        os.replace(tmp, path)


def write_mono(lines: Iterable[str], path: str) -> int:
    """Clean lines -> PATH atomically; returns the number written."""
    n, progress = 0, Progress(path)
    with atomic_outputs([path]) as (out,):
        for raw in lines:
            line = clean_line(raw)
            if line is not None:
                out.write(line + "\n")
                n += 1
                progress.tick(n)
    logger.info("%s: %d lines", path, n)
    return n


def write_parallel(sides: Dict[str, Iterable[str]], names: Dict[str, str], paths: Dict[str, str]) -> int:
    """Line-aligned sides {lang: lines} -> {lang: path} atomically, dropping pairs with a blank side.

    ``names`` names each side's source in errors: sides of different lengths are refused."""
    langs = list(sides)
    n = dropped = 0
    progress = Progress(paths[langs[0]][: -len(langs[0]) - 1])
    with atomic_outputs([paths[lg] for lg in langs]) as outs:
        for count, row in enumerate(zip_longest(*(sides[lg] for lg in langs)), start=1):
            if any(r is None for r in row):
                short = [names[lg] for lg, r in zip(langs, row) if r is None]
                raise DataSourceError(f"{short[0]}: ends at line {count - 1} while "
                                      f"{' and '.join(names[lg] for lg in langs if names[lg] not in short)} "
                                      "goes on: the sides are not line-aligned")
            cleaned = [clean_line(r) for r in row]
            if any(c is None for c in cleaned):
                dropped += 1
                continue
            for out, line in zip(outs, cleaned):
                out.write(line + "\n")
            n += 1
            progress.tick(n)
    logger.info("%s: %d line pairs (%d with a blank side dropped)",
                ", ".join(paths[lg] for lg in langs), n, dropped)
    return n
