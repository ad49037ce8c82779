"""The authors' seeded valid / test split, to the byte, and a streaming one for corpora larger than memory.

The authors' ``split_data`` (get-data-wiki.sh, get-data-para.sh) shuffles a corpus with GNU ``shuf
--random-source=<(openssl enc -aes-256-ctr -pass pass:42 -nosalt </dev/zero)`` and keeps the first N - 10,000
lines as train, the next 5,000 as valid and the last 5,000 as test. ``ShufPermutation`` reproduces it:

- the random bytes are openssl's AES-256-CTR key stream (key and IV from ``EVP_BytesToKey`` with SHA-256,
  openssl >= 1.1's default, one iteration, no salt) over zeros, produced with ``cryptography``;
- shuf draws a full Fisher-Yates permutation (coreutils ``randperm_new``): for i in 0..n-1 it swaps i with
  ``i + randint_choose(n - i)``, and ``randint_choose`` consumes the bytes as coreutils' ``randint_genmax``
  does (big-endian, rejecting the top partial range, carrying the unused randomness over).

Memory: 16 bytes per line (the permutation and the line offsets), never the text (lines are copied from a
memory map). ``stream_split`` needs neither: it draws the valid and test line numbers (numpy, seeded) and copies
every other line to train in corpus order, in one pass after counting (memory: the 10,000 numbers).
Parallel corpora are split by the same permutation on every side."""

import contextlib
import hashlib
import mmap
import os
from typing import Dict, Iterator, Sequence

import numpy as np

from fairseq_xlm.errors import DataSourceError

from . import crash_point

CHUNK = 1 << 16


class SplitError(DataSourceError):
    """A corpus that cannot be split as asked; the message names the file."""


def openssl_stream(seed: str) -> Iterator[bytes]:
    """``openssl enc -aes-256-ctr -pass pass:SEED -nosalt </dev/zero``, in chunks."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    password = seed.encode()
    d1 = hashlib.sha256(password).digest()
    d2 = hashlib.sha256(d1 + password).digest()
    encryptor = Cipher(algorithms.AES(d1), modes.CTR(d2[:16])).encryptor()
    zeros = bytes(CHUNK)
    while True:
        yield encryptor.update(zeros)


class _RandInt:
    """coreutils' ``randint_genmax`` over a byte stream."""

    def __init__(self, stream: Iterator[bytes]):
        self.stream, self.buf, self.pos = stream, b"", 0
        self.randnum = self.randmax = 0

    def _bytes(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            self.buf, self.pos = self.buf[self.pos:] + next(self.stream), 0
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def genmax(self, genmax: int) -> int:
        randnum, randmax, choices = self.randnum, self.randmax, genmax + 1
        while True:
            if randmax < genmax:
                i, rmax = 0, randmax
                while True:
                    rmax = (rmax << 8) + 255
                    i += 1
                    if rmax >= genmax:
                        break
                for byte in self._bytes(i):
                    randnum = (randnum << 8) + byte
                    randmax = (randmax << 8) + 255
            if randmax == genmax:
                self.randnum = self.randmax = 0
                return randnum
            excess = randmax - genmax
            unusable = excess % choices
            last_usable = randmax - unusable
            reduced = randnum % choices
            if randnum <= last_usable:
                self.randnum, self.randmax = randnum // choices, excess // choices
                return reduced
            randnum, randmax = reduced, unusable - 1


def shuf_permutation(n: int, seed: str = "42") -> np.ndarray:
    """The line order of ``shuf --random-source=<(openssl ... pass:SEED ...)`` on an n-line file."""
    v = np.arange(n, dtype=np.int64)
    rand = _RandInt(openssl_stream(seed))
    for i in range(n - 1 if n > 1 else 0):
        j = rand.genmax(n - i - 1) + i
        v[i], v[j] = v[j], v[i]
    return v


def line_offsets(path: str) -> np.ndarray:
    """Byte offsets of every line start, plus the end (a last line without newline counts): 8 bytes a line."""
    size = os.path.getsize(path)
    if size == 0:
        raise SplitError(f"{path}: empty file, nothing to split")
    parts, pos = [np.zeros(1, np.int64)], 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            parts.append(np.flatnonzero(np.frombuffer(block, np.uint8) == 10).astype(np.int64) + (pos + 1))
            pos += len(block)
    starts = np.concatenate(parts)
    return starts if starts[-1] == size else np.append(starts, size)


def _check_sizes(paths: Sequence[str], n: Sequence[int], held_out: int) -> None:
    if len(set(n)) > 1:
        raise SplitError(f"{paths[1]}: {n[1]} lines but {paths[0]} has {n[0]}; parallel sides must be line-aligned")
    if n[0] <= held_out:
        raise SplitError(f"{paths[0]}: {n[0]} lines, not more than the {held_out} held out for valid and test")


def shuf_split(paths: Sequence[str], outs: Dict[str, Sequence[str]], size: int = 5000, seed: str = "42") -> Dict[str, int]:
    """The authors' split of ``paths`` (one file, or the aligned sides of a parallel corpus):
    ``outs = {"train": [...], "valid": [...], "test": [...]}``, one output per input. Outputs are written to
    ``.tmp`` names and renamed together at the end."""
    offsets = [line_offsets(p) for p in paths]
    n = [len(o) - 1 for o in offsets]
    _check_sizes(paths, n, 2 * size)
    perm = shuf_permutation(n[0], seed)
    parts = {"train": perm[:n[0] - 2 * size], "valid": perm[n[0] - 2 * size:n[0] - size], "test": perm[n[0] - size:]}
    _write(paths, offsets, parts, outs)
    return {name: len(rows) for name, rows in parts.items()}


@contextlib.contextmanager
def _staged(outs: Dict[str, Sequence[str]]):
    """{part: temporary names} for ``outs``, renamed together when the block succeeds, removed otherwise."""
    tmps = {name: [f"{o}.tmp" for o in files] for name, files in outs.items()}
    try:
        yield tmps
        for name in outs:
            for tmp, final in zip(tmps[name], outs[name]):
                os.replace(tmp, final)
    finally:
        for files in tmps.values():
            for tmp in files:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp)


def _write(paths, offsets, parts: Dict[str, np.ndarray], outs) -> None:
    with _staged(outs) as tmps:
        for k, path in enumerate(paths):
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                off = offsets[k]
                for name, rows in parts.items():
                    with open(tmps[name][k], "wb") as out:
                        for i in rows.tolist():
                            line = mm[off[i]:off[i + 1]]
                            out.write(line if line.endswith(b"\n") else line + b"\n")
                    crash_point("split")


def count_lines(path: str) -> int:
    """Lines of ``path`` (a last line without newline counts), read in blocks."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def stream_split(paths: Sequence[str], outs: Dict[str, Sequence[str]], size: int = 5000, seed: int = 42) -> Dict[str, int]:
    """A seeded split in two streaming passes (count, copy): valid and test are ``size`` lines each drawn
    uniformly without replacement; train keeps every other line in corpus order. Not the authors' bytes."""
    n = [count_lines(p) for p in paths]
    if n[0] == 0:
        raise SplitError(f"{paths[0]}: empty file, nothing to split")
    _check_sizes(paths, n, 2 * size)
    held = np.random.default_rng(seed).choice(n[0], 2 * size, replace=False)
    role = set(held.tolist())
    with _staged(outs) as tmps:
        for k, path in enumerate(paths):
            with contextlib.ExitStack() as stack:
                files = {name: stack.enter_context(open(tmps[name][k], "wb")) for name in outs}
                src = stack.enter_context(open(path, "rb"))
                held_lines: Dict[int, bytes] = {}
                for i, line in enumerate(src):
                    line = line if line.endswith(b"\n") else line + b"\n"
                    if i in role:
                        held_lines[i] = line
                    else:
                        files["train"].write(line)
                for name, rows in (("valid", held[:size]), ("test", held[size:])):
                    files[name].writelines(held_lines[i] for i in rows.tolist())
                crash_point("split")
    return {"train": n[0] - 2 * size, "valid": size, "test": size}
