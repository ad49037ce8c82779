"""Optimizers fairseq lacks: ``xlm_pkm_adam`` (Adam plus the memory values' own optimizer)."""

from . import pkm_adam  # noqa: F401
