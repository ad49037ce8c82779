"""Wikipedia dumps -> ``OUT/wiki/{lang}.txt`` as get-data-wiki.sh keeps them, through WikiExtractor.

The authors run WikiExtractor on ``{lg}wiki-latest-pages-articles.xml.bz2`` and keep its text lines: empty
lines and the ``<doc ...>`` / ``</doc>`` lines are removed, so each article gives its title line, then one
line per paragraph (section titles as lines of their own). We run the maintained ``wikiextractor`` package
(the same program, as a subprocess, so its worker processes and template expansion are its own) and filter
its stream the same way. The dump is read as a bz2 stream and the text written as it comes: memory does not
grow with the dump.
"""

import logging
import subprocess
import sys
import tempfile
from typing import Optional

from fairseq_xlm.acquire.textfiles import Progress, atomic_outputs, text_lines
from fairseq_xlm.errors import DataSourceError

logger = logging.getLogger("fairseq_xlm.acquire")


def keep(line: str) -> bool:
    """The authors' filter: ``sed "/^\\s*$/d" | grep -v "^<doc id=" | grep -v "</doc>$"``."""
    return bool(line.strip()) and not line.startswith("<doc id=") and not line.endswith("</doc>")


def extract_wiki(dump: str, path: str, processes: int = 1, templates: bool = True) -> int:
    """A pages-articles dump (.xml.bz2) -> PATH, one paragraph a line; returns the number of lines."""
    cmd = [sys.executable, "-m", "wikiextractor.WikiExtractor", dump, "--processes", str(processes), "-q", "-o", "-"]
    if not templates:
        cmd.append("--no-templates")
    n, progress = 0, Progress(path)
    with tempfile.TemporaryFile(mode="w+b") as errors:
        with atomic_outputs([path]) as (out,):
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors)
            try:
                for raw in text_lines(proc.stdout, dump):
                    line = raw.rstrip("\n")
                    if keep(line):
                        out.write(line + "\n")
                        n += 1
                        progress.tick(n)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            rc = proc.wait()
            if rc != 0:
                errors.seek(0)
                reason = _last_line(errors.read().decode("utf-8", "replace"))
                raise DataSourceError(f"{dump}: WikiExtractor failed ({reason}); is it a complete pages-articles "
                                      ".xml.bz2? delete it and rerun to download it again")
            if n == 0:
                raise DataSourceError(f"{dump}: no article text (an empty dump, or not a pages-articles dump)")
    logger.info("%s: %d lines from %s", path, n, dump)
    return n


def _last_line(text: str) -> Optional[str]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"
