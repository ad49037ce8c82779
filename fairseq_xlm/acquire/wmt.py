"""WMT'16 as get-data-nmt.sh takes it: News Crawl monolingual text, en-ro parallel data, newstest SGML sets.

- ``OUT/newscrawl/{lang}.txt``: the ``news.{year}.{lang}.shuffled.gz`` of each year, in year order, streamed
  (the authors gunzip them and keep the first 5M lines: that cut belongs to preparation, not acquisition).
- ``OUT/wmt16/{corpus}.en-ro.{lang}``: Europarl v8 (WMT'16's tarball) and SETIMES2 (OPUS).
- ``OUT/newstest/{set}.{l1}-{l2}.{lang}``: the SGM files get-data-nmt.sh names, from WMT'18's dev.tgz. As
  Moses' ``input-from-sgm.perl``: the text of each ``<seg>`` with runs of white space made one space and
  the ends trimmed; entities (``&amp;``, ``&quot;``, ``&#39;``) are decoded as well, so the text is plain.
"""

import gzip
import html
import logging
import os
import re
from typing import Dict, Iterator, List, Tuple

from fairseq_xlm.acquire import archives, para, sources
from fairseq_xlm.acquire.archives import ARCHIVE_ERRORS
from fairseq_xlm.acquire.download import Fetcher
from fairseq_xlm.acquire.textfiles import done, text_lines, write_mono, write_parallel
from fairseq_xlm.errors import DataSourceError

logger = logging.getLogger("fairseq_xlm.acquire")

SEG = re.compile(r"<seg[^>]*>(.*?)</seg>", re.IGNORECASE | re.DOTALL)


def gz_lines(path: str) -> Iterator[str]:
    """Lines of a .gz file, streamed; a damaged file is an error naming it."""
    try:
        with gzip.open(path, "rb") as f:
            yield from text_lines(f, path)
    except ARCHIVE_ERRORS as err:
        raise archives.corrupt(path, err) from err


def sgm_segments(path: str) -> List[str]:
    """The segments of a WMT .sgm file (``<srcset>``/``<refset>``, ``<doc>``, ``<seg id=..>``), as plain text."""
    with open(path, "rb") as f:
        text = "".join(text_lines(f, path))
    segs = [" ".join(html.unescape(m.group(1)).split()) for m in SEG.finditer(text)]
    if not segs:
        raise DataSourceError(f"{path}: no <seg> elements (not a WMT .sgm file?)")
    return segs


def acquire_newscrawl(fetcher: Fetcher, out: str, langs: List[str], years: Dict[str, List[int]]) -> Dict[str, int]:
    """News Crawl of each language -> OUT/newscrawl/{lang}.txt; {lang: lines}."""
    counts = {}
    for lang in langs:
        path = os.path.join(out, "newscrawl", f"{lang}.txt")
        if done([path]):
            logger.info("%s: done", path)
            continue
        files = [fetcher.get(sources.news_crawl(lang, y)) for y in years[lang]]
        counts[lang] = write_mono((line for f in files for line in gz_lines(f)), path)
    return counts


def acquire_wmt16_en_ro(fetcher: Fetcher, out: str) -> Dict[str, int]:
    """WMT'16 en-ro parallel training data -> OUT/wmt16/{europarl-v8,SETIMES2}.en-ro.{en,ro}."""
    counts, folder = {}, os.path.join(out, "wmt16")
    europarl = para.outputs(folder, "europarl-v8", "en", "ro")
    if not done(europarl.values()):
        archive = fetcher.get(sources.EUROPARL_V8)
        files = archives.unpack(archive, list(sources.EUROPARL_V8_MEMBERS.values()),
                                os.path.join(fetcher.downloads, sources.EUROPARL_V8.name + ".d"))
        counts["europarl-v8.en-ro"] = para.extract_unpacked(
            {lg: files[m] for lg, m in sources.EUROPARL_V8_MEMBERS.items()}, europarl)
    setimes = para.outputs(folder, "SETIMES2", "en", "ro")
    if not done(setimes.values()):
        counts["SETIMES2.en-ro"] = para.extract_opus(fetcher.get(sources.opus_moses("SETIMES2", "en-ro")),
                                                     "en", "ro", setimes)
    return counts


def acquire_newstest(fetcher: Fetcher, out: str, pairs: List[Tuple[str, str]]) -> Dict[str, int]:
    """The dev/test sets of each pair -> OUT/newstest/{set}.{l1}-{l2}.{lang}; {output prefix: segments}."""
    counts, folder = {}, os.path.join(out, "newstest")
    todo = []
    for l1, l2 in pairs:
        for name, files in sources.NEWSTEST[f"{l1}-{l2}"].items():
            paths = para.outputs(folder, name, l1, l2)
            if done(paths.values()):
                logger.info("%s: done", os.path.join(folder, f"{name}.{l1}-{l2}"))
            else:
                todo.append((f"{name}.{l1}-{l2}", files, paths))
    if not todo:
        return counts
    archive = fetcher.get(sources.WMT_DEV)
    wanted = sorted({f for _, files, _ in todo for f in files.values()})
    unpacked = archives.unpack(archive, wanted, os.path.join(fetcher.downloads, sources.WMT_DEV.name + ".d"))
    for prefix, files, paths in todo:
        sides = {lg: sgm_segments(unpacked[f]) for lg, f in files.items()}
        counts[prefix] = write_parallel(sides, {lg: unpacked[f] for lg, f in files.items()}, paths)
    return counts
