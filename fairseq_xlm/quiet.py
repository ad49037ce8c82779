"""Library noise a user cannot act on, silenced: what fairseq's own commands print besides progress and results.

fairseq 0.12 composes its config through hydra's deprecated experimental API, so every fairseq-train,
fairseq-generate, fairseq-validate and fairseq-interactive run prints six hydra deprecation warnings (with
source lines such as ``self.delegate = real_initialize(``), interleaved with a recipe's results; torch's data
loader warns at every epoch of a CPU run that fairseq asked for ``pin_memory`` without an accelerator.
Importing ``fairseq_xlm`` (as ``--user-dir`` does, before fairseq composes its config) ignores exactly these
messages; every other warning is shown. ``FAIRSEQ_XLM_DEBUG=1`` shows them all.

Importing fairseq also calls ``logging.basicConfig(level=DEBUG)`` (``fairseq.models.wav2vec``), so a program
that imports ``fairseq_xlm`` first printed every library's DEBUG lines (matplotlib's 150 in ``cli.curves``,
hydra's): ``root_logger_kept`` leaves the root logger as the importer had it.
"""

import contextlib
import logging
import os
import warnings

# (message regex, matched from the message's start) of the warnings above
NOISE = (
    r"hydra\.experimental\.(initialize|compose)\(\) is no longer experimental",
    r"\s*The version_base parameter is not specified",
    r"In '[^']*': Usage of deprecated keyword in package header",
    r"\s*'[^']*' is validated against ConfigStore schema with the same name",
    r"\s*The strict flag in the compose API is deprecated",
    r"'pin_memory' argument is set as true but no accelerator is found",
)


def install() -> None:
    """Ignore the warnings of NOISE (idempotent: the same filters are not added twice), and undo fairseq's
    ``basicConfig(level=DEBUG)`` when fairseq was imported first (fairseq-generate, -interactive, -validate
    configure logging only after it, so their runs printed hydra's DEBUG lines): INFO, or ``LOGLEVEL``, as
    fairseq's commands mean."""
    if os.environ.get("FAIRSEQ_XLM_DEBUG"):
        return
    for message in NOISE:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    root = logging.getLogger()
    made_by_basic_config = [getattr(h.formatter, "_fmt", None) for h in root.handlers] == [logging.BASIC_FORMAT]
    if root.level == logging.DEBUG and made_by_basic_config:
        root.setLevel(os.environ.get("LOGLEVEL", "INFO").upper())


@contextlib.contextmanager
def root_logger_kept():
    """Restore the root logger's level and handlers after the block (imports that configure logging)."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        if root.level != level or root.handlers != handlers:
            root.setLevel(level)
            root.handlers[:] = handlers
