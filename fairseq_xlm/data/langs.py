"""Language lists of the command lines (``--langs en,es,ny``), standard library only: the commands that only read
text (``fairseq_xlm.cli.bible``, ``cli.demo genre-raw``) run without importing torch or fairseq."""

import re
from typing import List

from ..errors import ConfigError


def parse_langs(langs: str, flag: str = "--langs") -> List[str]:
    """'en,es,ny' -> ['en', 'es', 'ny'], with one clear error for empty or repeated names."""
    out = [lang.strip() for lang in (langs or "").split(",") if lang.strip()]
    if not out:
        raise ConfigError(f"{flag} is empty: give comma-separated language codes, e.g. {flag} en,es")
    if len(set(out)) != len(out):
        raise ConfigError(f"{flag} {langs!r} names a language twice")
    bad = [lang for lang in out if not re.fullmatch(r"[A-Za-z0-9_]+", lang)]
    if bad:
        raise ConfigError(f"{flag}: invalid language code(s) {bad} (letters, digits and _ only)")
    return out
