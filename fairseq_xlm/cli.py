"""What the package's command-line modules share: fairseq-style log lines."""

import logging
import sys

LOG_FORMAT = "%(asctime)s | %(levelname)s | %(name)s | %(message)s"  # fairseq's own format


def setup_logging(level: int = logging.INFO, stream=None) -> None:
    """Log like fairseq-train does (to stdout by default), replacing handlers set up earlier."""
    logging.basicConfig(format=LOG_FORMAT, level=level, stream=stream or sys.stdout, force=True)
