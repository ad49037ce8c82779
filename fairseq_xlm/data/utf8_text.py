"""One scan of a text file that both counts its lines and checks that every line is UTF-8, so that the
preparation commands (``prepare``, ``prepare_paper``) refuse a bad byte with the same one-line error naming
the file, the line and the byte, before any work starts."""

from typing import Type


def utf8_line_count(path: str, error: Type[Exception] = ValueError) -> int:
    """Lines of ``path``; raises ``error`` with ``PATH:LINE: not UTF-8 text (...)`` at the first line that does
    not decode (the caller's own error class, so that its command prints it as one line)."""
    n = 0
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise error(f"{path}:{n}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return n
