"""One line, not a traceback, for the errors a user fixes by changing a file, a flag or the machine.

fairseq-train, fairseq-generate, fairseq-interactive and fairseq-validate let every exception escape with a
full traceback, and their wrappers (``distributed_utils.call_main``) add nothing: the line that says what
is wrong ends up under 7-15 lines of our and fairseq's frames. Every error a user can fix is raised as a
``UserError`` (a flag or setting: ``ConfigError``; a file or folder a flag names: ``MissingFileError``; a
data-bin file: ``DataBinError``; a checkpoint: ``safe_load.CheckpointLoadError``; a full disk:
``DiskFullError``), each also a subclass of the built-in class it replaces (``ValueError``,
``FileNotFoundError``, ...), so ``except ValueError`` keeps working. A collective that timed out because
another rank stopped answering is said so too (``dist_timeout.explain``).

Importing ``fairseq_xlm`` (as ``--user-dir`` does) installs a ``sys.excepthook`` that prints
``error: MESSAGE`` for them (exit status 1, as for any uncaught exception) and leaves every other exception
to the default hook. Several GPUs run fairseq's ranks under ``torch.multiprocessing.spawn``, whose parent
re-raises a rank's error as ``ProcessRaisedException`` with the rank's traceback as text: the hook prints its
last line when it names one of our classes. ``FAIRSEQ_XLM_DEBUG=1`` (or the older ``FAIRSEQ_XLM_TRACEBACK=1``)
prints the traceback anyway.
"""

import errno
import os
import shutil
import sys
from typing import Optional

DEBUG_VARIABLES = ("FAIRSEQ_XLM_DEBUG", "FAIRSEQ_XLM_TRACEBACK")


class UserError(Exception):
    """An error the user fixes by changing a file, a flag or the machine: printed as one line."""


class ConfigError(UserError, ValueError):
    """A flag or setting that is wrong: a language not in the data, a misspelt step, the wrong checkpoint kind."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder named by a flag (a data path, a checkpoint) that does not exist."""


class DataBinError(UserError, ValueError):
    """A data-bin file that is missing, truncated, corrupted or does not match its manifest or dictionary."""


class DataSourceError(UserError, ValueError):
    """A corpus download or source file that is missing, corrupt, empty or not what its flag asks for."""


class DiskFullError(UserError, OSError):
    """No space left on the filesystem a file was being written to (the path and the free space named)."""


def free_space(path: str) -> str:
    """'12.3 MB free' on the filesystem of ``path`` (or of its nearest existing parent); '' if unknown."""
    folder = os.path.abspath(path)
    while folder and not os.path.exists(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if free >= size:
            return f"{free / size:.1f} {unit} free"
    return f"{free} bytes free"


NEARLY_FULL = 1 << 20  # bytes: a library's "write failed" on a filesystem with less free space is a full disk


def is_disk_full(err: BaseException, path: Optional[str] = None) -> bool:
    """True for ENOSPC / EDQUOT (a full disk or quota), and for a library's failed write (torch's
    "file write failed", sentencepiece's) while the filesystem of ``path`` has under NEARLY_FULL bytes free."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    if "No space left on device" in text or "Disk quota exceeded" in text:
        return True
    if path is None or not isinstance(err, (OSError, RuntimeError)):
        return False
    folder = os.path.dirname(os.path.abspath(path))
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL
    except OSError:
        return False


def disk_full(path: str, hint: str = "free space or choose another folder, then run the same command again"
              ) -> DiskFullError:
    """The one-line error for a full disk while writing ``path``: the path, its folder's free space, ``hint``."""
    where = os.path.abspath(path) if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    return DiskFullError(errno.ENOSPC, f"no space left on the device writing {path} ({where}: "
                                       f"{free_space(where) or 'free space unknown'}); {hint}")


def _user_errors():
    from .safe_load import CheckpointLoadError

    return (UserError, CheckpointLoadError)


def _spawned_user_error(value: BaseException) -> Optional[str]:
    """The message of one of our errors raised in a rank that ``torch.multiprocessing.spawn`` ran, or None."""
    if type(value).__name__ != "ProcessRaisedException":
        return None
    import importlib

    last = str(value).strip().splitlines()[-1] if str(value).strip() else ""
    kind, sep, message = last.partition(": ")
    module, _, name = kind.rpartition(".")
    if not (sep and module.startswith("fairseq_xlm")):
        return None
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    return message if isinstance(cls, type) and issubclass(cls, _user_errors()) else None


def one_line(kind, value) -> Optional[str]:
    """The line to print for an uncaught exception, or None to leave it to the default hook."""
    from .dist_timeout import explain

    if issubclass(kind, _user_errors()):
        return str(value) if not isinstance(value, OSError) or not value.strerror else value.strerror
    return _spawned_user_error(value) or explain(value)


def _hook(previous):
    def excepthook(kind, value, tb):
        if not any(os.environ.get(name) for name in DEBUG_VARIABLES):
            line = one_line(kind, value)
            if line is not None:
                sys.stderr.write(f"error: {line}\n")
                sys.stderr.flush()
                return
        previous(kind, value, tb)

    excepthook._fairseq_xlm = True
    return excepthook


def install_excepthook() -> None:
    """Print our user-facing errors as one line (idempotent)."""
    if not getattr(sys.excepthook, "_fairseq_xlm", False):
        sys.excepthook = _hook(sys.excepthook)
