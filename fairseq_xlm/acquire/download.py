"""Downloads that resume, checksums and the ledger; or the same files taken from a local folder (``--from``).

``Fetcher.get(remote)`` returns the path of a complete, checked file:

- from ``--from DIR``: ``DIR/{remote.name}`` (nothing is copied); a missing file is an error naming it and
  the URL it comes from;
- otherwise ``OUT/downloads/{remote.name}``, downloaded into ``{name}.part`` with HTTP Range requests: a cut
  connection is retried from where it stopped (``retries`` times, then a rerun resumes the ``.part``), and
  the file is renamed to its final name only once complete and checked.

Every file used is recorded in ``OUT/downloads/ledger.json`` (URL, size, sha256, where it came from). A file
whose size no longer matches its ledger entry is refused; a checksum the source publishes (Wikipedia's
sha1sums) or the user gives (``--checksums FILE``, ``sha256sum`` format) is verified, and a mismatch is
refused naming the file (a downloaded one is set aside as ``{name}.corrupt``). ``--mirror URL`` (or
``$FAIRSEQ_XLM_DATA_MIRROR``) replaces the scheme and host of every URL, keeping the path.
"""

import fcntl
import hashlib
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterable, Optional
from urllib.parse import urlsplit

from fairseq_xlm.errors import DataSourceError

logger = logging.getLogger("fairseq_xlm.acquire")

MIRROR_ENV = "FAIRSEQ_XLM_DATA_MIRROR"
LEDGER = "ledger.json"
CHUNK = 1 << 20
_NET_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError)


@dataclass(frozen=True)
class Remote:
    """One source file: its local ``name`` (under downloads/ and --from), its URL, and where the source
    publishes its checksum (a ``sha1sums``/``md5sums``-style file whose entry matches ``sums_entry``)."""

    name: str
    url: str
    sums_url: Optional[str] = None
    sums_algo: str = "sha1"
    sums_entry: Optional[str] = None  # regex on the file names listed in the sums file


def with_mirror(url: str, mirror: Optional[str]) -> str:
    """URL with its scheme and host replaced by MIRROR's (path and query kept)."""
    if not mirror:
        return url
    parts = urlsplit(url)
    return mirror.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


def read_checksums(path: str) -> Dict[str, str]:
    """A ``sha256sum``-format file (``HEX  NAME`` per line) -> {name: hex}."""
    sums = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            m = re.match(r"^([0-9a-fA-F]{64})\s+\*?(\S+)\s*$", line)
            if not m:
                raise DataSourceError(f"{path}:{number}: not a sha256sum line (HEX  NAME)")
            sums[os.path.basename(m.group(2))] = m.group(1).lower()
    return sums


def file_digests(path: str, algos: Iterable[str]) -> Dict[str, str]:
    """{algo: hex digest} of a file, read once."""
    hashers = {a: hashlib.new(a) for a in set(algos)}
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            for h in hashers.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hashers.items()}


def _human(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class Fetcher:
    """Gets source files into OUT/downloads (or from --from DIR), checked and recorded in the ledger."""

    def __init__(self, out: str, from_dir: Optional[str] = None, mirror: Optional[str] = None,
                 checksums: Optional[Dict[str, str]] = None, retries: int = 5, retry_wait: float = 5.0,
                 timeout: float = 60.0, progress_every: float = 10.0):
        self.downloads = os.path.join(out, "downloads")
        self.from_dir = from_dir
        self.mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
        self.checksums = dict(checksums or {})
        self.retries, self.retry_wait, self.timeout = retries, retry_wait, timeout
        self.progress_every = progress_every
        os.makedirs(self.downloads, exist_ok=True)

    # ---- the ledger ------------------------------------------------------------------------------------
    @contextmanager
    def _ledger(self):
        """The ledger as a dict, locked against another get_data writing it; saved atomically on exit."""
        path = os.path.join(self.downloads, LEDGER)
        with open(path + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = {}
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    entries = json.load(f)
            yield entries
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                json.dump(entries, f, indent=1, sort_keys=True)
                f.write("\n")
            os.replace(path + ".tmp", path)

    def recorded(self, name: str) -> Optional[dict]:
        """The ledger's entry for a file name, if any."""
        with self._ledger() as entries:
            return entries.get(name)

    # ---- getting one file ------------------------------------------------------------------------------
    def get(self, remote: Remote) -> str:
        """Path of the complete, checked file for REMOTE (downloaded, reused, or from --from DIR)."""
        url = with_mirror(remote.url, self.mirror)
        if self.from_dir:
            path = os.path.join(self.from_dir, remote.name)
            if not os.path.isfile(path):
                raise DataSourceError(f"{path}: missing (--from {self.from_dir} must hold {remote.name}, "
                                      f"as downloaded from {remote.url})")
            origin = f"from:{os.path.abspath(self.from_dir)}"
        else:
            path = os.path.join(self.downloads, remote.name)
            origin = url
        if os.path.isfile(path):
            entry = self.recorded(remote.name)
            stat = os.stat(path)
            if entry and entry["size"] == stat.st_size and entry.get("mtime") == int(stat.st_mtime):
                logger.info("%s: present (%s, sha256 %s)", path, _human(stat.st_size), entry["sha256"][:12])
                return path
            if (not self.from_dir and entry and entry.get("path") == os.path.abspath(path)
                    and entry["size"] != stat.st_size):
                raise DataSourceError(f"{path}: {stat.st_size} bytes but the ledger recorded {entry['size']}: "
                                      "changed since it was fetched; delete it to fetch it again")
        else:
            self._download(url, path)
        self._check_and_record(remote, url, path, origin, downloaded=not self.from_dir)
        return path

    def _published(self, remote: Remote) -> Optional[str]:
        """The checksum the source publishes for REMOTE (None when it publishes none or it is unreachable)."""
        if not remote.sums_url:
            return None
        sums_name = os.path.basename(urlsplit(remote.sums_url).path)
        if self.from_dir:
            path = os.path.join(self.from_dir, sums_name)
            if not os.path.isfile(path):
                logger.warning("%s: absent, so %s is not checked against the published %s",
                               path, remote.name, remote.sums_algo)
                return None
        else:
            path = os.path.join(self.downloads, sums_name)
            try:
                self._download(with_mirror(remote.sums_url, self.mirror), path, quiet=True, retries=1)
            except DataSourceError as err:
                logger.warning("%s not checked against a published %s: %s", remote.name, remote.sums_algo, err)
                return None
        with open(path, encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) == 2 and re.fullmatch(remote.sums_entry or re.escape(remote.name), fields[1]):
                    return fields[0].lower()
        logger.warning("%s: no entry for %s, so it is not checked", path, remote.name)
        return None

    def _check_and_record(self, remote: Remote, url: str, path: str, origin: str, downloaded: bool) -> None:
        expected = {}
        if remote.name in self.checksums:
            expected["sha256"] = (self.checksums[remote.name], "--checksums")
        published = self._published(remote)
        if published:
            expected[remote.sums_algo] = (published, remote.sums_url)
        digests = file_digests(path, {"sha256", *expected})
        for algo, (want, source) in expected.items():
            if digests[algo] != want:
                hint = "the file is corrupt or not the published one"
                if downloaded:
                    os.replace(path, path + ".corrupt")
                    hint += f"; set aside as {path}.corrupt, rerun to download it again"
                raise DataSourceError(f"{path}: {algo} {digests[algo]} but {source} says {want} ({hint})")
        stat = os.stat(path)
        with self._ledger() as entries:
            entries[remote.name] = {"url": url, "path": os.path.abspath(path), "origin": origin,
                                    "size": stat.st_size, "mtime": int(stat.st_mtime), "sha256": digests["sha256"],
                                    **{f"{a}_verified": d for a, d in digests.items() if a in expected and a != "sha256"}}
        logger.info("%s: %s, sha256 %s%s", path, _human(stat.st_size), digests["sha256"],
                    f" ({', '.join(expected)} verified)" if expected else "")

    # ---- HTTP with resume ------------------------------------------------------------------------------
    def _download(self, url: str, path: str, quiet: bool = False, retries: Optional[int] = None) -> None:
        """URL -> PATH through PATH.part, resuming after a cut connection; renamed once complete."""
        part = path + ".part"
        tries = (self.retries if retries is None else retries) + 1
        for attempt in range(1, tries + 1):
            try:
                self._transfer(url, part, quiet)
                break
            except urllib.error.HTTPError as err:
                raise DataSourceError(f"{url}: HTTP {err.code} {err.reason} (pass the file as "
                                      f"{os.path.basename(path)} with --from DIR, or a --mirror that has it)")
            except _NET_ERRORS as err:
                have = os.path.getsize(part) if os.path.exists(part) else 0
                if attempt == tries:
                    raise DataSourceError(f"{url}: download failed after {tries} tries ({err}); "
                                          f"rerun to resume {part} from byte {have}")
                logger.warning("%s: connection lost at byte %d (%s); resuming (try %d of %d)",
                               url, have, err, attempt + 1, tries)
                time.sleep(self.retry_wait)
        os.replace(part, path)

    def _transfer(self, url: str, part: str, quiet: bool) -> None:
        have = os.path.getsize(part) if os.path.exists(part) else 0
        headers = {"User-Agent": "fairseq_xlm-get_data"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self.timeout)
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:  # nothing left past our byte: complete if the server says so
                total = re.search(r"/(\d+)", err.headers.get("Content-Range", ""))
                if total and int(total.group(1)) == have:
                    return
            raise
        with resp:
            if have and resp.status != 206:
                logger.warning("%s: the server ignored the range request; downloading from the start", url)
                have = 0
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            if not quiet:
                logger.info("downloading %s -> %s%s", url, part, f" (resuming at byte {have})" if have else "")
            got, start, last = have, time.time(), time.time()
            with open(part, "ab" if have else "wb") as f:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    f.write(block)
                    got += len(block)
                    if not quiet and time.time() - last >= self.progress_every:
                        last = time.time()
                        rate = (got - have) / max(last - start, 1e-9)
                        share = f" of {_human(total)} ({100 * got / total:.0f}%)" if total else ""
                        logger.info("%s: %s%s, %s/s", os.path.basename(part), _human(got), share, _human(rate))
            if total is not None and got != total:
                raise http.client.IncompleteRead(b"", total - got)
