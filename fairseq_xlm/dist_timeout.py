"""A frozen rank fails its peers in minutes, not after torch's 30-minute default.

fairseq 0.12 calls ``torch.distributed.init_process_group`` without a timeout, so a rank whose peer stopped
answering (SIGSTOP, a hung device, a dead host behind a live socket) waits in its collective for torch's
default of 30 minutes. With ``FAIRSEQ_XLM_DIST_TIMEOUT=SECONDS`` in the environment (the recipes set 600),
importing ``fairseq_xlm`` (``--user-dir`` does it before fairseq initialises the process group) makes that
the default process-group timeout; a collective that waits longer raises, and ``errors`` prints it as one
line saying that this rank waited in vain and that another rank stopped answering. fairseq's own
``--heartbeat-timeout`` (the recipes pass it too) kills a rank that makes no forward pass for that long.
"""

import os
import re
from datetime import timedelta
from typing import Optional

ENV = "FAIRSEQ_XLM_DIST_TIMEOUT"


def configured() -> Optional[float]:
    """The timeout in seconds from the environment, or None (torch's default)."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise ValueError(f"{ENV}={value!r}: give the process-group timeout in seconds (> 0), or unset it")
    return seconds


def install() -> None:
    """Set torch's default process-group timeouts (gloo and NCCL) from the environment, if given."""
    seconds = configured()
    if seconds is None:
        return
    from torch.distributed import distributed_c10d

    distributed_c10d.default_pg_timeout = timedelta(seconds=seconds)
    if isinstance(getattr(distributed_c10d, "default_pg_nccl_timeout", None), timedelta):
        distributed_c10d.default_pg_nccl_timeout = timedelta(seconds=seconds)


TIMEOUT = re.compile(r"Timed out waiting|Connection closed by peer|Connection reset by peer|"
                     r"Watchdog caught collective operation timeout")


def explain(err: BaseException) -> Optional[str]:
    """One line for a collective that timed out or lost its peer, or None if ``err`` is something else."""
    import torch.distributed as dist

    text = str(err)
    if not isinstance(err, RuntimeError) or not TIMEOUT.search(text):
        return None
    if not (dist.is_available() and dist.is_initialized()):
        return None
    rank, size = dist.get_rank(), dist.get_world_size()
    others = [r for r in range(size) if r != rank]
    who = f"rank {others[0]}" if len(others) == 1 else f"one of ranks {','.join(map(str, others))}"
    detail = text.strip().splitlines()[0][:200]
    return (f"rank {rank} of {size}: {who} stopped answering (frozen, hung or dead; see its log): a collective "
            f"waited in vain ({detail}). Process-group timeout: {ENV}={os.environ.get(ENV, 'unset (30 min)')} s")
