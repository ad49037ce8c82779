"""Checkpoint files that survive a kill: atomic writes and copies, resume from the newest readable file.

fairseq 0.12 writes a checkpoint as ``NAME.tmp`` and renames it (without fsync), but makes
``checkpoint_last.pt`` and ``checkpoint_best.pt`` with a plain ``PathManager.copy``: a process killed
during that copy leaves a truncated or empty file, and the next start fails on it although an intact
checkpoint lies beside it. Importing ``fairseq_xlm`` installs, for local paths:

* ``torch_persistent_save`` and the copies write ``NAME.tmp`` + flush + fsync + ``os.replace`` + fsync of
  the folder, so every checkpoint name holds either its old or its new content;
* at start (``checkpoint_utils.load_checkpoint``) stale ``*.pt.tmp`` files of the save dir are removed;
  a ``checkpoint_last.pt`` that is not a complete checkpoint is replaced, for this start, by the newest
  readable ``checkpoint*.pt`` of the save dir, with a warning naming both; so is a missing
  ``checkpoint_last.pt`` beside complete checkpoints (a disk that filled up before the copy); a
  ``--restore-file`` other than fairseq's default that does not exist is an error (fairseq would silently
  start from scratch);
* a full disk during a save is one ``DiskFullError`` line naming the file, the free space and how to go on
  (no partial file is left: the ``.tmp`` is removed).

We patch the functions fairseq's trainer looks up at call time (``checkpoint_utils.torch_persistent_save``,
``checkpoint_utils.PathManager``, ``checkpoint_utils.load_checkpoint``) instead of copying fairseq's
``save_checkpoint``: the patches are small and follow fairseq's own choice of what to save and when.
Remote paths (iopath handlers) are left to fairseq.
"""

import contextlib
import glob
import logging
import os
import shutil
import zipfile
from typing import List, Optional

from fairseq import checkpoint_utils
from fairseq.file_io import PathManager
from omegaconf import open_dict

from .errors import DiskFullError, disk_full, is_disk_full
from .safe_load import CheckpointLoadError

logger = logging.getLogger("fairseq_xlm.checkpoint_files")

TMP_SUFFIX = ".tmp"  # fairseq's own temporary name is NAME.pt.tmp; ours is the same


def _local(path: str) -> bool:
    return not PathManager.path_requires_pathmanager(path)


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: str, path: str) -> None:
    """fsync ``tmp``, rename it to ``path``, fsync the folder: after a crash ``path`` is old or new."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))


@contextlib.contextmanager
def _full_disk_is_one_line(path: str):
    """A full disk while writing ``path``: one DiskFullError naming it, its free space and how to go on."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        if isinstance(err, DiskFullError) or not is_disk_full(err, path):
            raise
        raise disk_full(path, "free space (or choose another --save-dir) and run the same command again: it "
                              "resumes from the newest complete checkpoint of the save dir") from err


def atomic_copy(src: str, dst: str) -> bool:
    """Copy ``src`` to ``dst`` through ``dst.tmp`` (fsync + rename); True as PathManager.copy."""
    tmp = dst + TMP_SUFFIX
    with _full_disk_is_one_line(dst):  # outside: the free space is measured once the .tmp is gone
        try:
            shutil.copyfile(src, tmp)
            _publish(tmp, dst)
        finally:
            if os.path.lexists(tmp):
                os.remove(tmp)
    return True


def atomic_torch_save(obj, filename: str) -> None:
    """torch.save to ``filename.tmp`` (fairseq's retries), then fsync + rename."""
    tmp = filename + TMP_SUFFIX
    with _full_disk_is_one_line(filename):  # outside: the free space is measured once the .tmp is gone
        try:
            with open(tmp, "wb") as f:
                checkpoint_utils._torch_persistent_save(obj, f)
            _publish(tmp, filename)
        finally:
            if os.path.lexists(tmp):
                os.remove(tmp)


class AtomicPathManager(PathManager):
    """fairseq's PathManager whose ``copy`` of local files is atomic (used by save_checkpoint)."""

    @staticmethod
    def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        if _local(src_path) and _local(dst_path):
            if not overwrite and os.path.exists(dst_path):
                return False
            return atomic_copy(src_path, dst_path)
        return PathManager.copy(src_path, dst_path, overwrite=overwrite)


def is_complete(path: str) -> bool:
    """True if ``path`` is a whole torch.save file: a zip archive whose every member passes its CRC
    (a torn copy is truncated, so its central directory or a member is missing), or a legacy pickle."""
    try:
        if os.path.getsize(path) == 0:
            return False
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return archive.testzip() is None
        with open(path, "rb") as f:
            return f.read(1) == b"\x80"
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


def remove_stale_temporaries(save_dir: str) -> List[str]:
    """Delete ``checkpoint*.pt.tmp`` left by a killed save (never read by anyone); returns their paths."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(save_dir), "checkpoint*.pt" + TMP_SUFFIX)):
        try:
            os.remove(path)
            removed.append(path)
        except FileNotFoundError:  # another rank of this job removed it first
            pass
    if removed:
        logger.warning("removed %d stale temporary checkpoint file(s) of a killed save: %s", len(removed),
                       ", ".join(removed))
    return removed


def newest_readable(save_dir: str, exclude: str, suffix: str = "") -> Optional[str]:
    """The most recently written complete ``checkpoint*{suffix}.pt`` of ``save_dir`` other than ``exclude``."""
    candidates = [p for p in glob.glob(os.path.join(glob.escape(save_dir), f"checkpoint*{suffix}.pt"))
                  if os.path.abspath(p) != os.path.abspath(exclude)]
    for path in sorted(candidates, key=lambda p: (os.path.getmtime(p), p), reverse=True):
        if is_complete(path):
            return path
    return None


def _restore_path(cfg, suffix: str) -> Optional[str]:
    """The file fairseq will restore from, or a readable replacement (None: leave fairseq's choice)."""
    if cfg.restore_file != "checkpoint_last.pt":
        path = cfg.restore_file.replace(".pt", suffix + ".pt") if suffix else cfg.restore_file
        if _local(path) and not os.path.exists(path):
            raise CheckpointLoadError(
                f"--restore-file {cfg.restore_file}: no such file ({os.path.abspath(path)}); training would "
                f"start from scratch. Fix the path, or drop --restore-file to resume from "
                f"{cfg.save_dir}/checkpoint_last.pt")
        return None
    last = os.path.join(cfg.save_dir, f"checkpoint_last{suffix}.pt")
    if not _local(last) or (os.path.exists(last) and is_complete(last)):
        return None
    if not os.path.exists(last):
        # e.g. a disk that filled up after checkpoint_1_5.pt was written, before its copy to checkpoint_last.pt
        fallback = newest_readable(cfg.save_dir, last, suffix) if os.path.isdir(cfg.save_dir) else None
        if fallback is not None:
            logger.warning("no %s: resuming from %s, the newest complete checkpoint in %s", last, fallback,
                           cfg.save_dir)
        return fallback
    fallback = newest_readable(cfg.save_dir, last, suffix)
    if fallback is None:
        raise CheckpointLoadError(
            f"{last}: not a complete checkpoint (torn by a kill during a save?) and no other readable "
            f"checkpoint*.pt in {cfg.save_dir}; delete it to start from scratch")
    logger.warning("%s is not a complete checkpoint (torn by a kill during a save?): resuming from %s, the "
                   "newest readable checkpoint in %s", last, fallback, cfg.save_dir)
    return fallback


def _guarded_load(load_fn):
    def load_checkpoint(cfg, trainer, **passthrough_args):
        suffix = trainer.checkpoint_suffix or ""
        if _local(cfg.save_dir) and os.path.isdir(cfg.save_dir):
            remove_stale_temporaries(cfg.save_dir)
        fallback = _restore_path(cfg, suffix)
        if fallback is None:
            return load_fn(cfg, trainer, **passthrough_args)
        # fairseq's own branch for an existing checkpoint_last.pt, pointed at the fallback: with an existing
        # last checkpoint it ignores --finetune-from-model, and a non-default --restore-file takes no suffix.
        saved = cfg.restore_file, cfg.finetune_from_model
        with open_dict(cfg):
            cfg.restore_file, cfg.finetune_from_model = fallback.replace(suffix + ".pt", ".pt"), None
        try:
            return load_fn(cfg, trainer, **passthrough_args)
        finally:
            with open_dict(cfg):
                cfg.restore_file, cfg.finetune_from_model = saved

    load_checkpoint._fairseq_xlm_guarded = True
    return load_checkpoint


def _atomic_persistent_save(save_fn):
    def torch_persistent_save(obj, filename, async_write: bool = False):
        if async_write or not _local(filename):
            return save_fn(obj, filename, async_write=async_write)
        return atomic_torch_save(obj, filename)

    torch_persistent_save._fairseq_xlm_guarded = True
    return torch_persistent_save


def install() -> None:
    """Patch fairseq's checkpoint writing and restoring (idempotent)."""
    if not getattr(checkpoint_utils.torch_persistent_save, "_fairseq_xlm_guarded", False):
        checkpoint_utils.torch_persistent_save = _atomic_persistent_save(checkpoint_utils.torch_persistent_save)
    checkpoint_utils.PathManager = AtomicPathManager
    if not getattr(checkpoint_utils.load_checkpoint, "_fairseq_xlm_guarded", False):
        checkpoint_utils.load_checkpoint = _guarded_load(checkpoint_utils.load_checkpoint)
