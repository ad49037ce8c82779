"""Plain text files written whole or not at all (standard library only: the study's job workers import it
without torch or fairseq)."""

import os
from typing import Iterable


def write_lines(path: str, lines: Iterable[str]) -> None:
    """Write ``lines`` to ``path``, one per line, atomically: a temporary named after this process, then a rename,
    so that a reader never sees a half-written file and two writers never share a temporary."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
