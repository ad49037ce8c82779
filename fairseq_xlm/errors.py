"""One line, not a traceback, for the errors a user fixes by changing a file or a flag.

fairseq-train and fairseq-generate let every exception escape with a full traceback. Errors of the
classes below already name the file and what is wrong, and a collective that timed out because another
rank stopped answering is said so (``dist_timeout.explain``): the traceback only hides that line; importing
``fairseq_xlm`` (as ``--user-dir`` does) installs a ``sys.excepthook`` that prints ``error: MESSAGE`` for
them (exit status 1, as for any uncaught exception) and leaves every other exception to the default hook.
Set ``FAIRSEQ_XLM_TRACEBACK=1`` to get the traceback anyway.
"""

import os
import sys


class DataBinError(ValueError):
    """A data-bin file that is missing, truncated, corrupted or does not match its manifest or dictionary."""


class DataSourceError(ValueError):
    """A corpus download or source file that is missing, corrupt, empty or not what its flag asks for."""


def _user_errors():
    from .safe_load import CheckpointLoadError

    return (CheckpointLoadError, DataBinError, DataSourceError)


def _hook(previous):
    def excepthook(kind, value, tb):
        from .dist_timeout import explain

        if not os.environ.get("FAIRSEQ_XLM_TRACEBACK"):
            line = str(value) if issubclass(kind, _user_errors()) else explain(value)
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
