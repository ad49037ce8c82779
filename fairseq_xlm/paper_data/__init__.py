"""The paper's data as the authors prepare it: their text form (``text_form``), their seeded split
(``seeded_split``), fastBPE learned from scratch (``fastbpe``, ``stl_order``) and the paper's settings
(``experiments``); ``fairseq_xlm.cli.prepare_paper`` chains them into a data-bin."""

import os
import signal

CRASH_ENV = "FAIRSEQ_XLM_CRASH_AT"


def crash_point(stage: str) -> None:
    """Fault injection for the tests: with $FAIRSEQ_XLM_CRASH_AT = ``stage`` the process is killed (SIGKILL,
    nothing cleaned up) here, while the stage's ``.tmp`` output exists."""
    if os.environ.get(CRASH_ENV) == stage:
        os.kill(os.getpid(), signal.SIGKILL)
