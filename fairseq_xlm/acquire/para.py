"""Parallel corpora -> line-aligned ``{corpus}.{l1}-{l2}.{lang}`` files (OPUS moses zips, IIT Bombay's tgz).

OPUS's moses-format zip of a pair holds ``{Corpus}.{l1}-{l2}.{l1}`` and ``.{l2}`` (plus README/LICENSE); the
corpus part of the member names varies between releases (``SETIMES.en-tr.en`` in SETIMES2), so members are
found by their ``.{l1}-{l2}.{lang}`` ending. Both sides are read from the zip in lockstep, never unpacked.
"""

import logging
import os
from typing import Dict, List, Tuple

from fairseq_xlm.acquire import archives, sources
from fairseq_xlm.acquire.archives import ARCHIVE_ERRORS
from fairseq_xlm.acquire.download import Fetcher, Remote
from fairseq_xlm.acquire.textfiles import done, text_lines, write_parallel
from fairseq_xlm.errors import DataSourceError

logger = logging.getLogger("fairseq_xlm.acquire")


def outputs(folder: str, corpus: str, l1: str, l2: str) -> Dict[str, str]:
    """{lang: FOLDER/{corpus}.{l1}-{l2}.{lang}}."""
    return {lg: os.path.join(folder, f"{corpus}.{l1}-{l2}.{lg}") for lg in (l1, l2)}


def guarded(lines, archive: str):
    """Lines of an archive member; a read failure half-way names the archive."""
    try:
        yield from lines
    except ARCHIVE_ERRORS as err:
        raise archives.corrupt(archive, err) from err


def extract_opus(archive: str, l1: str, l2: str, paths: Dict[str, str]) -> int:
    """An OPUS moses zip of l1-l2 -> {lang: path}; returns the number of line pairs."""
    wanted = {lg: f".{l1}-{l2}.{lg}" for lg in (l1, l2)}
    with archives.zip_members(archive, list(wanted.values()), suffix=True) as streams:
        sides = {lg: guarded(text_lines(streams[w], archive), archive) for lg, w in wanted.items()}
        return write_parallel(sides, {lg: f"{archive}:*{w}" for lg, w in wanted.items()}, paths)


def extract_unpacked(files: Dict[str, str], paths: Dict[str, str]) -> int:
    """Two aligned plain files {lang: file} (unpacked from a tgz) -> {lang: path}."""
    handles = {lg: open(f, "rb") for lg, f in files.items()}
    try:
        return write_parallel({lg: text_lines(h, files[lg]) for lg, h in handles.items()}, files, paths)
    finally:
        for h in handles.values():
            h.close()


def plan(pairs: List[Tuple[str, str]], corpora: List[str] = None) -> List[Tuple[str, str, str, Remote]]:
    """(corpus, l1, l2, remote) for every corpus of every pair: get-data-para.sh's, or CORPORA for all."""
    jobs = []
    for l1, l2 in pairs:
        pair = f"{l1}-{l2}"
        names = corpora or sources.PARA_CORPORA.get(pair)
        if names is None:
            raise DataSourceError(f"--pairs {pair}: get-data-para.sh has no corpus for it (its pairs: "
                                  f"{','.join(sources.PARA_CORPORA)}); name OPUS corpora with --corpora "
                                  f"({','.join(sources.OPUS_RELEASES)})")
        for corpus in names:
            if corpus == "IITB":
                if pair != "en-hi":
                    raise DataSourceError(f"--corpora IITB: the IIT Bombay corpus is en-hi only, not {pair}")
                jobs.append((corpus, l1, l2, sources.IITB))
            elif corpus in sources.OPUS_RELEASES:
                jobs.append((corpus, l1, l2, sources.opus_moses(corpus, pair)))
            else:
                raise DataSourceError(f"--corpora {corpus}: unknown corpus (known: "
                                      f"{','.join([*sources.OPUS_RELEASES, 'IITB'])})")
    return jobs


def acquire_para(fetcher: Fetcher, out: str, pairs: List[Tuple[str, str]], corpora: List[str] = None) -> Dict[str, int]:
    """Every corpus of every pair -> OUT/para/{corpus}.{l1}-{l2}.{lang}; {output prefix: line pairs}."""
    counts = {}
    for corpus, l1, l2, remote in plan(pairs, corpora):
        paths = outputs(os.path.join(out, "para"), corpus, l1, l2)
        prefix = f"{corpus}.{l1}-{l2}"
        if done(paths.values()):
            logger.info("%s: done", os.path.join(out, "para", prefix))
            continue
        archive = fetcher.get(remote)
        if corpus == "IITB":
            unpacked = archives.unpack(archive, list(sources.IITB_MEMBERS.values()),
                                       os.path.join(fetcher.downloads, remote.name + ".d"))
            counts[prefix] = extract_unpacked({lg: unpacked[m] for lg, m in sources.IITB_MEMBERS.items()}, paths)
        else:
            counts[prefix] = extract_opus(archive, l1, l2, paths)
    return counts
