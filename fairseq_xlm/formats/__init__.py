"""Checkpoint formats: the authors' release, HF ``transformers`` and fairseq_xlm, through one neutral form.

Each conversion is one reader (``read_authors``, ``read_hf``, ``read_fairseq``) into ``Released`` plus one
writer (``write_fairseq``, ``write_hf``, ``write_authors``); ``python -m fairseq_xlm.cli.convert`` is the command line.
"""

from .readers import load_model, read_authors, read_fairseq, read_hf
from .released import KEY_TABLE, Released, rename, select_langs, swap_specials
from .writers import staged_dir, write_authors, write_fairseq, write_hf

__all__ = ["KEY_TABLE", "Released", "load_model", "read_authors", "read_fairseq", "read_hf", "rename",
           "select_langs", "staged_dir", "swap_specials", "write_authors", "write_fairseq", "write_hf"]
