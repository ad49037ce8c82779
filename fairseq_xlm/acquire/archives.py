"""Members of the downloaded archives (zip, tar.gz), found by base name, read or unpacked as streams.

Archives are opened lazily and read once; any failure to read one (truncated download, bad CRC, not an
archive at all) becomes one ``DataSourceError`` naming the archive and saying how to get a good copy.
"""

import io
import os
import shutil
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from typing import Dict, Iterator, Sequence

from fairseq_xlm.errors import DataSourceError

# What reading a damaged zip / gzip / tar raises.
ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError)


def corrupt(archive: str, err: Exception) -> DataSourceError:
    """The error for an archive that cannot be read."""
    return DataSourceError(f"{archive}: corrupt or truncated archive ({type(err).__name__}: {err}); "
                           "delete it and rerun to download it again (or replace it in --from)")


def _pick(archive: str, names: Sequence[str], wanted: str, suffix: bool = False) -> str:
    """The one member whose base name is WANTED (or ends with it, when SUFFIX), macOS resource forks aside."""
    def matches(base: str) -> bool:
        return base.endswith(wanted) if suffix else base == wanted

    found = [n for n in names if matches(os.path.basename(n.rstrip("/"))) and "__MACOSX" not in n]
    if len(found) != 1:
        what = "ending with" if suffix else "named"
        raise DataSourceError(f"{archive}: {'no' if not found else 'several'} member {what} {wanted} "
                              f"({len(names)} members; is it the right archive?)")
    return found[0]


@contextmanager
def zip_members(archive: str, wanted: Sequence[str], suffix: bool = False) -> Iterator[Dict[str, io.BufferedIOBase]]:
    """{wanted: binary stream} of zip members matched by base name (or its end, when SUFFIX), open together
    (zipfile reads members independently, so two sides of a corpus stream in lockstep)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            streams = {w: zf.open(_pick(archive, names, w, suffix)) for w in wanted}
            yield streams
    except DataSourceError:
        raise
    except ARCHIVE_ERRORS as err:
        raise corrupt(archive, err) from err


def unpack(archive: str, wanted: Sequence[str], dest: str) -> Dict[str, str]:
    """Copy the named members of a zip or tar(.gz) to DEST/{base name} (each atomically; present ones kept)."""
    os.makedirs(dest, exist_ok=True)
    paths = {w: os.path.join(dest, w) for w in wanted}
    missing = [w for w in wanted if not os.path.isfile(paths[w])]
    if not missing:
        return paths
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                names = zf.namelist()
                for w in missing:
                    with zf.open(_pick(archive, names, w)) as src:
                        _copy(src, paths[w])
        else:
            # One pass over the compressed stream ("r|*"), so a tar.gz is never decompressed twice.
            todo = set(missing)
            with tarfile.open(archive, "r|*") as tf:
                for member in tf:
                    base = os.path.basename(member.name)
                    if base in todo and member.isfile() and "__MACOSX" not in member.name:
                        _copy(tf.extractfile(member), paths[base])
                        todo.discard(base)
            if todo:
                raise DataSourceError(f"{archive}: no member named {sorted(todo)[0]} (is it the right archive?)")
    except DataSourceError:
        raise
    except ARCHIVE_ERRORS as err:
        raise corrupt(archive, err) from err
    return paths


def _copy(src, path: str) -> None:
    with open(path + ".tmp", "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(path + ".tmp", path)
