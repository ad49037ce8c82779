"""The data-bin layout shared by every fairseq_xlm task (written by ``fairseq_xlm.cli.prepare``).

    data-bin/NAME/
      dict.txt                        one joined fairseq dictionary for all languages (no <mask>)
      spm.model, spm.vocab            the shared sentencepiece BPE model (or authors_bpe/: the authors' BPE,
                                      for their released checkpoints; see ``authors_bpe``)
      {split}.{lang}.{bin,idx}        monolingual text, one sentence per line (split: train/valid/test)
      {split}.{l1}-{l2}.{lang}.{bin,idx}   parallel text, lang in (l1, l2), line-aligned

A sharded data-bin is several such folders given as one path, ``data-bin/shard0:data-bin/shard1:...`` (as
fairseq's own tasks): every shard has the same dict.txt and spm.model, training reads shard ``(epoch - 1) % n``
in epoch ``epoch``, validation and test the first (``fairseq_xlm.cli.prepare --shards N`` writes them so).

Tasks load the dictionary with ``load_dictionary`` (which appends ``<mask>``) so that all checkpoints of
one data-bin share one vocabulary size, and every split with ``load_split`` / ``check_parallel``, which
hold it to the data-bin's ``manifest.json`` (see ``manifest``) and name the file of any problem.
"""

import glob
import os
from typing import List, Optional, Tuple

from fairseq.data import Dictionary

from . import manifest
from .langs import parse_langs  # noqa: F401  (here too: every task reads --langs with the layout)
from .token_stream import SentenceDataset
from ..errors import ConfigError, DataBinError, MissingFileError

MASK = "<mask>"


def load_dictionary(data_dir: str) -> Dictionary:
    """The joined dictionary of ``data_dir`` plus ``<mask>`` (a no-op when dict.txt already has it)."""
    path = os.path.join(data_dir, "dict.txt")
    if not os.path.isfile(path):
        raise MissingFileError(f"{path}: no dictionary; is {data_dir} a data-bin made by fairseq_xlm.cli.prepare?")
    dictionary = Dictionary.load(path)
    dictionary.add_symbol(MASK)
    return dictionary


def shard_dirs(data: str) -> List[str]:
    """The folders of a (possibly sharded) data path ``dir0:dir1:...``; one clear error for an empty one."""
    dirs = data.split(os.pathsep)
    if not all(dirs):
        raise ConfigError(f"data path {data!r} has an empty shard (use dir0{os.pathsep}dir1{os.pathsep}...)")
    return dirs


def split_dir(data: str, split: str, epoch: int = 1) -> str:
    """The folder that holds ``split`` in ``epoch``: shard ``(epoch - 1) % n`` for train, the first otherwise.
    A shard whose dict.txt differs from the first shard's is refused (token ids would change meaning)."""
    dirs = shard_dirs(data)
    folder = dirs[(epoch - 1) % len(dirs)] if split == "train" else dirs[0]
    if folder != dirs[0]:
        with open(os.path.join(dirs[0], "dict.txt"), "rb") as a, open(os.path.join(folder, "dict.txt"), "rb") as b:
            if a.read() != b.read():
                raise ConfigError(f"{os.path.join(folder, 'dict.txt')} differs from {os.path.join(dirs[0], 'dict.txt')}:"
                                 " every shard of a data path needs the same dictionary")
    return folder


def mono_prefix(data_dir: str, split: str, lang: str) -> str:
    return os.path.join(data_dir, f"{split}.{lang}")


def para_prefix(data_dir: str, split: str, l1: str, l2: str, lang: str) -> Optional[str]:
    """Prefix of one side of a parallel corpus stored as l1-l2 or l2-l1; None if absent."""
    for a, b in ((l1, l2), (l2, l1)):
        prefix = os.path.join(data_dir, f"{split}.{a}-{b}.{lang}")
        if os.path.exists(prefix + ".bin"):
            return prefix
    return None


def available(data_dir: str, split: str) -> Tuple[List[str], List[str]]:
    """(monolingual languages, parallel pairs) present for ``split`` in ``data_dir``."""
    mono, pairs = set(), set()
    for path in glob.glob(os.path.join(data_dir, f"{split}.*.bin")):
        parts = os.path.basename(path)[: -len(".bin")].split(".")
        if len(parts) == 2:
            mono.add(parts[1])
        elif len(parts) == 3 and "-" in parts[1]:
            pairs.add(parts[1])
    return sorted(mono), sorted(pairs)


def check_split(prefix: str, dictionary: Dictionary, data_dir: str) -> None:
    """``manifest.check_split`` of ``prefix`` (.bin/.idx) against ``data_dir``'s dict.txt, which
    ``dictionary`` was loaded from."""
    manifest.check_split(prefix, os.path.join(data_dir, "dict.txt"), len(dictionary))


def load_split(prefix: str, dictionary: Dictionary, data_dir: str, what: str = "text") -> SentenceDataset:
    """The sentences of ``prefix`` (.bin/.idx), checked first (``check_split``): items and sizes as fairseq's
    ``MMapIndexedDataset``, opened from the index header only (no warm-up read of the whole files, which
    fairseq's loader does in every process), so every task opens its splits the same cheap way."""
    check_split(prefix, dictionary, data_dir)
    return SentenceDataset(prefix, what)


def check_parallel(src, tgt, src_prefix: str, tgt_prefix: str) -> None:
    """The two sides of a parallel split must hold the same number of lines."""
    if len(src) != len(tgt):
        raise DataBinError(f"{tgt_prefix}.bin: {len(tgt)} sentences, but the other side {src_prefix}.bin has "
                           f"{len(src)}: the sides of a parallel corpus must be line-aligned")
