"""Load fairseq checkpoints under torch >= 2.6's ``weights_only=True`` through an allow-list.

fairseq 0.12 calls ``torch.load`` without ``weights_only``; torch now defaults it to True and refuses the
non-tensor objects that fairseq checkpoints carry (``argparse.Namespace`` in older ones, OmegaConf nodes,
numpy scalars in ``extra_state``). Instead of turning the safety off, we allow exactly those types.
Importing ``fairseq_xlm`` (which ``--user-dir`` does before any checkpoint is read) installs this, so
``fairseq-train --restore-file``, ``fairseq-generate`` and ``checkpoint_utils.load_model_ensemble`` work.
"""

import argparse
import collections
import functools
import os
import pickle
import re
import typing
import zipfile

import numpy as np
import torch
from fairseq import checkpoint_utils
from omegaconf import DictConfig, ListConfig
from omegaconf.base import ContainerMetadata, Metadata
from omegaconf.nodes import AnyNode

from .errors import UserError


class CheckpointLoadError(UserError, RuntimeError):
    """A checkpoint file that was refused or could not be read."""


def _numpy_globals():
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core -> numpy._core
    dtype_classes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    return [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype, *dtype_classes]


# Every non-tensor type found in fairseq 0.9-0.12 checkpoints (args, cfg, extra_state, optimizer state).
SAFE_GLOBALS = [
    argparse.Namespace,
    DictConfig,
    ListConfig,
    ContainerMetadata,
    Metadata,
    AnyNode,
    typing.Any,
    collections.defaultdict,
    dict,
    list,
    int,
    float,
    str,
    bool,
    *_numpy_globals(),
]


def explain(path: str, err: Exception) -> CheckpointLoadError:
    """One clear error for a refused (unsafe) or unreadable checkpoint file."""
    text = str(err)
    unsafe = re.search(r"GLOBAL (\S+) was not an allowed global", text) or re.search(
        r"Unsupported global: GLOBAL (\S+)", text
    )
    if unsafe:
        return CheckpointLoadError(
            f"{path}: refused to load: the checkpoint contains '{unsafe.group(1)}', which is not a type "
            f"fairseq checkpoints contain (see fairseq_xlm.safe_load.SAFE_GLOBALS). It may run code when "
            f"unpickled; load it only if you trust its source and know why it holds that object."
        )
    if "Weights only load failed" in text and "blocked" in text:
        return CheckpointLoadError(f"{path}: refused to load: {text.splitlines()[-3:]}")
    return CheckpointLoadError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {text[:200]})")


def check_checkpoint_file(path: str) -> None:
    """Refuse early what is neither torch.save's zip archive nor its legacy pickle (which starts with 0x80):
    the unpickler would read other bytes, such as text, as opcodes and fail with an unrelated error."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(1)
    if head != b"\x80" and not zipfile.is_zipfile(path):
        raise CheckpointLoadError(f"{path}: not a readable PyTorch checkpoint (neither a zip archive nor a pickle)")


def torch_load(path: str):
    """``torch.load(weights_only=True)`` with the allow-list, for files that are not fairseq checkpoints."""
    check_checkpoint_file(path)
    install()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # malformed bytes surface as any error of the unpickler (KeyError, IndexError...)
        raise explain(path, err) from err


def _guarded(load_fn):
    @functools.wraps(load_fn)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        if os.path.isfile(path):  # remote paths (PathManager) are left to fairseq
            check_checkpoint_file(path)
        try:
            return load_fn(path, *args, **kwargs)
        except (pickle.UnpicklingError, EOFError) as err:
            raise explain(path, err) from err
        except RuntimeError as err:
            if isinstance(err, CheckpointLoadError) or not re.search(
                r"PytorchStreamReader|magic number|zip archive|Weights only", str(err)
            ):
                raise
            raise explain(path, err) from err

    load_checkpoint_to_cpu._fairseq_xlm_guarded = True
    return load_checkpoint_to_cpu


def install() -> None:
    """Allow fairseq's checkpoint types for weights_only loads; turn refusals into clear errors."""
    torch.serialization.add_safe_globals(SAFE_GLOBALS)
    if not getattr(checkpoint_utils.load_checkpoint_to_cpu, "_fairseq_xlm_guarded", False):
        checkpoint_utils.load_checkpoint_to_cpu = _guarded(checkpoint_utils.load_checkpoint_to_cpu)


def load_checkpoint(path: str) -> dict:
    """Read a checkpoint safely to CPU (fairseq's loader, with upgrades and the allow-list)."""
    install()
    return checkpoint_utils.load_checkpoint_to_cpu(path)
