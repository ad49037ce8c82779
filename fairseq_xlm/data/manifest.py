"""What a data-bin claims to be, and the checks that hold it to that claim.

``fairseq_xlm.cli.prepare`` (and ``prepare_xnli`` for its sub-folder) write ``manifest.json`` beside the data:

    {"format": 1, "langs": [...], "pairs": [...],
     "dictionary": {"file": "dict.txt", "sha256": ...},   the dictionary the data was binarized with
     "spm_model": {"sha256": ...},
     "files": {"train.en.bin": {"bytes": ..., "sha256": ..., "max_id": ...}, "train.en.idx": {...}, ...}}

Every task checks a split when it loads it (``check_split``, cheap: sizes, the dictionary's checksum,
the index header, the recorded largest token id against the dictionary), so a truncated, replaced or mismatched file stops
the run at load with one ``DataBinError`` naming the file; ``python -m fairseq_xlm.cli.verify`` recomputes
every checksum. A data-bin without a manifest (plain ``fairseq-preprocess``) still loads, with a logged
note, and its index structure and token ids are checked all the same (reading the .bin once).
"""

import functools
import hashlib
import json
import logging
import os
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from ..errors import DataBinError
from .token_stream import HEADER_BYTES, read_index_header

logger = logging.getLogger("fairseq_xlm.data.manifest")

NAME = "manifest.json"
FORMAT = 1


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=64)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256(path)


def cached_sha256(path: str) -> str:
    """sha256 of ``path``, computed once per (size, mtime) in this process (the dictionary of every split)."""
    st = os.stat(path)
    return _cached_sha256(os.path.abspath(path), st.st_size, st.st_mtime_ns)


# ---------------------------------------------------------------- index structure and token ids


def read_index(prefix: str) -> Tuple[np.dtype, np.ndarray, np.ndarray]:
    """(dtype, sizes, pointers) of ``prefix.idx``, checked against itself and ``prefix.bin``'s size."""
    idx, bin_path = prefix + ".idx", prefix + ".bin"
    for path in (idx, bin_path):
        if not os.path.isfile(path):
            raise DataBinError(f"{path}: missing (each split needs both .bin and .idx)")
    dtype, n = _header(prefix)
    data = np.memmap(idx, dtype=np.uint8, mode="r")
    sizes = np.frombuffer(data, dtype=np.int32, count=n, offset=HEADER_BYTES)
    pointers = np.frombuffer(data, dtype=np.int64, count=n, offset=HEADER_BYTES + 4 * n)
    ends = np.cumsum(sizes.astype(np.int64)) * dtype.itemsize
    if (sizes < 0).any() or (n and (pointers[0] != 0 or (pointers[1:] != ends[:-1]).any())):
        raise DataBinError(f"{idx}: corrupted (sentence sizes and offsets disagree)")
    total = int(ends[-1]) if n else 0
    if os.path.getsize(bin_path) != total:
        raise DataBinError(f"{bin_path}: {os.path.getsize(bin_path)} bytes, but {idx} indexes {total} bytes "
                           f"({n} sentences): truncated, or .bin and .idx of different data")
    return dtype, sizes, pointers


def token_range(prefix: str) -> Tuple[int, int]:
    """(min, max) token id of ``prefix.bin`` (reads the whole file once; (0, -1) when empty)."""
    dtype, _, _ = read_index(prefix)
    if os.path.getsize(prefix + ".bin") == 0:
        return 0, -1
    tokens = np.memmap(prefix + ".bin", dtype=dtype, mode="r")
    return int(tokens.min()), int(tokens.max())


# ---------------------------------------------------------------- writing


def _data_files(folder: str) -> List[str]:
    skip = (NAME, "preprocess.log")
    return sorted(name for name in os.listdir(folder) if os.path.isfile(os.path.join(folder, name))
                  and name not in skip and ".tmp" not in name and not name.startswith("."))


def build(folder: str, dictionary: str, langs: Iterable[str] = (), pairs: Iterable[str] = ()) -> dict:
    """The manifest of every file of ``folder`` (not its sub-folders), binarized with ``dictionary``."""
    files: Dict[str, dict] = {}
    for name in _data_files(folder):
        path = os.path.join(folder, name)
        files[name] = {"bytes": os.path.getsize(path), "sha256": sha256(path)}
        if name.endswith(".bin") and os.path.isfile(path[: -len(".bin")] + ".idx"):
            files[name]["max_id"] = token_range(path[: -len(".bin")])[1]
    spm_model = os.path.join(os.path.dirname(os.path.abspath(dictionary)), "spm.model")
    return {
        "format": FORMAT, "langs": list(langs), "pairs": list(pairs),
        "dictionary": {"file": os.path.relpath(os.path.abspath(dictionary), os.path.abspath(folder)),
                       "sha256": sha256(dictionary)},
        "spm_model": {"sha256": sha256(spm_model)} if os.path.isfile(spm_model) else None,
        "files": files,
    }


def write(folder: str, dictionary: str, langs: Iterable[str] = (), pairs: Iterable[str] = ()) -> str:
    """Write ``folder/manifest.json`` (temporary name + rename); returns its path."""
    path = os.path.join(folder, NAME)
    manifest = build(folder, dictionary, langs, pairs)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
    logger.info("%s: %d files, sizes and sha256", path, len(manifest["files"]))
    return path


# ---------------------------------------------------------------- checking


def load(folder: str) -> Optional[dict]:
    """``folder/manifest.json`` or None; an unreadable manifest is an error."""
    path = os.path.join(folder, NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as err:
        raise DataBinError(f"{path}: unreadable ({err}); rerun fairseq_xlm.cli.prepare or delete it") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "files" not in manifest:
        raise DataBinError(f"{path}: not a fairseq_xlm manifest of format {FORMAT}")
    return manifest


_noted = set()


def check_dictionary(folder: str, manifest: dict, dictionary: str) -> None:
    want = manifest["dictionary"]["sha256"]
    if cached_sha256(dictionary) != want:
        raise DataBinError(
            f"{dictionary}: not the dictionary {os.path.join(folder, NAME)} was binarized with (sha256 differs): "
            f"token ids would mean other words. Use the data-bin's own dict.txt")


def check_split(prefix: str, dictionary_file: str, vocab_size: int) -> None:
    """The load-time check of one split ``prefix`` (.bin + .idx): against its folder's manifest (the
    dictionary's checksum, sizes, the recorded largest id), its index structure, its token ids (read from
    the .bin when the manifest does not list it or there is none)."""
    folder = os.path.dirname(os.path.abspath(prefix))
    manifest, base = load(folder), os.path.basename(prefix)
    listed = manifest is not None and all(f"{base}.{ext}" in manifest["files"] for ext in ("bin", "idx"))
    if manifest is None and folder not in _noted:
        _noted.add(folder)
        logger.info("%s: no %s (a data-bin not made by fairseq_xlm.cli.prepare): sizes and the dictionary are "
                    "not checked against one; token ids are", folder, NAME)
    if manifest is not None:
        check_dictionary(folder, manifest, dictionary_file)
        if not listed:
            logger.warning("%s.bin/.idx: not listed in %s (added after prepare?): checked by reading its token ids",
                           prefix, os.path.join(folder, NAME))
    for ext in ("bin", "idx") if listed else ():
        path, record = f"{prefix}.{ext}", manifest["files"][f"{base}.{ext}"]
        if not os.path.isfile(path):
            raise DataBinError(f"{path}: missing (listed in {os.path.join(folder, NAME)})")
        if os.path.getsize(path) != record["bytes"]:
            raise DataBinError(f"{path}: {os.path.getsize(path)} bytes, but {NAME} says {record['bytes']}: "
                               f"truncated or replaced since prepare (python -m fairseq_xlm.cli.verify {folder})")
    if listed:  # cheap: the header and the sizes; the arrays and checksums are verify's (reads everything)
        sentences = _header(prefix)[1]
        lo, hi = 0, manifest["files"][f"{base}.bin"].get("max_id", -1)
    else:  # no record to hold the files to: read the index arrays and the tokens once
        sentences = len(read_index(prefix)[1])
        lo, hi = token_range(prefix)
    if lo < 0 or hi >= vocab_size:
        raise DataBinError(f"{prefix}.bin: token id {hi if hi >= vocab_size else lo} is outside the dictionary "
                           f"{dictionary_file} ({vocab_size} symbols): the data was binarized with another one")
    if sentences == 0:
        raise DataBinError(f"{prefix}.bin: empty (no sentences)")


def _header(prefix: str) -> Tuple[np.dtype, int]:
    """(dtype, sentences) of ``prefix.idx``'s header (``token_stream.read_index_header``, the one parser),
    checked against the file's size; no array is read."""
    idx = prefix + ".idx"
    try:
        dtype, sentences = read_index_header(prefix)
    except ValueError as err:
        raise DataBinError(str(err)) from None
    if os.path.getsize(idx) != HEADER_BYTES + 12 * sentences:
        raise DataBinError(f"{idx}: {os.path.getsize(idx)} bytes, but its header says {sentences} sentences "
                           f"({HEADER_BYTES + 12 * sentences} bytes): truncated or corrupted")
    return dtype, sentences


def verify(folder: str) -> Tuple[int, List[str]]:
    """Recompute every checksum of ``folder``'s manifest: (files checked, problems, one line each)."""
    manifest = load(folder)
    if manifest is None:
        return 0, [f"{os.path.join(folder, NAME)}: missing (a data-bin not made by fairseq_xlm.cli.prepare)"]
    problems = []
    dictionary = os.path.normpath(os.path.join(folder, manifest["dictionary"]["file"]))
    if not os.path.isfile(dictionary) or sha256(dictionary) != manifest["dictionary"]["sha256"]:
        problems.append(f"{dictionary}: missing or not the dictionary the data was binarized with")
    for name, record in sorted(manifest["files"].items()):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            problems.append(f"{path}: missing")
        elif os.path.getsize(path) != record["bytes"]:
            problems.append(f"{path}: {os.path.getsize(path)} bytes, manifest says {record['bytes']}")
        elif sha256(path) != record["sha256"]:
            problems.append(f"{path}: sha256 differs from the manifest (corrupted or replaced)")
    for name in _data_files(folder):
        if name not in manifest["files"]:
            problems.append(f"{os.path.join(folder, name)}: not listed in the manifest")
    return len(manifest["files"]), problems
