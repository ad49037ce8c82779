"""A monolingual ``.bin`` as one token stream, cut into fixed blocks without any per-block or per-sentence array.

fairseq binarizes a language as its sentences back to back, each ending in ``</s>``: the ``.bin`` file already
*is* the authors' stream. Block ``i`` of length ``B`` is therefore tokens ``[B i, B i + B)`` of the memory map,
exactly what ``TokenBlockDataset(break_mode="none")`` returns, but without its ``slice_indices`` /
``block_to_dataset_index`` arrays (about 10 bytes per sentence, built at every load) and without
``MMapIndexedDataset``'s warm-up, which reads the whole ``.bin`` and ``.idx`` once per process before
training starts. Only the ``.idx`` header is read (dtype and sentence count); pages of the ``.bin`` are read
when a block is used.

``BlockCosts`` stands for the blocks' lengths (all ``B`` but a shorter last one) where the schedule needs
costs, so that no array grows with the corpus until a pass permutes the step's blocks.
"""

import os
import struct
from typing import Optional

import numpy as np
import torch
from fairseq.data import FairseqDataset
from fairseq.data.indexed_dataset import MMapIndexedDataset, _code_to_dtype

from .lm_datasets import SizedDataset

_MAGIC = MMapIndexedDataset.Index._HDR_MAGIC
# fairseq 0.12's mmap index: magic, version <Q, dtype code <B, sentences <Q, then int32 sizes and int64 byte
# pointers (fairseq/data/indexed_dataset.py); 12 bytes per sentence after this header.
HEADER_BYTES = len(_MAGIC) + 8 + 1 + 8


def read_index_header(prefix: str):
    """(dtype, sentences) from ``prefix.idx`` without reading its arrays; one clear error for a bad file.
    The one parser of the header (``manifest`` checks files with it too)."""
    path = prefix + ".idx"
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the index ({e.strerror})") from None
    if len(head) < HEADER_BYTES or head[: len(_MAGIC)] != _MAGIC:
        raise ValueError(f"{path}: not a fairseq mmap index (binarize with --dataset-impl mmap)")
    (version,) = struct.unpack("<Q", head[len(_MAGIC):len(_MAGIC) + 8])
    code = head[len(_MAGIC) + 8]
    (sentences,) = struct.unpack("<Q", head[len(_MAGIC) + 9:])
    if version != 1 or code not in _code_to_dtype:
        raise ValueError(f"{path}: unsupported index version {version} or dtype code {code}")
    return np.dtype(_code_to_dtype[code]), int(sentences)


class TokenStream:
    """The tokens of one binarized language as a lazily read memory map (no warm-up read)."""

    def __init__(self, prefix: str, what: str = "text"):
        self.prefix = prefix
        self.dtype, self.sentences = read_index_header(prefix)
        path = prefix + ".bin"
        if not os.path.isfile(path):
            raise ValueError(f"{path}: missing (the index {prefix}.idx has no data file)")
        size = os.path.getsize(path)
        if size == 0 or self.sentences == 0:
            raise ValueError(f"{path}: {what} is empty")
        if size % self.dtype.itemsize:
            raise ValueError(f"{path}: {size} bytes is not a whole number of {self.dtype} tokens")
        self.tokens = size // self.dtype.itemsize
        self._map: Optional[np.memmap] = None  # opened on first use, so that pickling to workers stays cheap

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_map"} | {"_map": None}

    def read(self, start: int, end: int) -> np.ndarray:
        """Tokens ``[start, end)`` as int64."""
        if self._map is None:
            self._map = np.memmap(self.prefix + ".bin", dtype=self.dtype, mode="r")
        return np.asarray(self._map[start:end], dtype=np.int64)


class SentenceDataset(SizedDataset):
    """Sentence ``i`` of a binarized text (as fairseq's ``MMapIndexedDataset``, without its warm-up read): the
    index arrays are memory maps read as they are used, and nothing is copied to data-loader workers."""

    def __init__(self, prefix: str, what: str = "text"):
        self.stream = TokenStream(prefix, what)
        self._arrays = None

    def __getstate__(self):
        return {"stream": self.stream, "_arrays": None}

    def _index(self):
        if self._arrays is None:
            n, path = self.stream.sentences, self.stream.prefix + ".idx"
            expected = HEADER_BYTES + 12 * n
            if os.path.getsize(path) < expected:
                raise ValueError(f"{path}: truncated ({os.path.getsize(path)} bytes, {n} sentences need {expected})")
            self._arrays = (np.memmap(path, dtype=np.int32, mode="r", offset=HEADER_BYTES, shape=(n,)),
                            np.memmap(path, dtype=np.int64, mode="r", offset=HEADER_BYTES + 4 * n, shape=(n,)))
        return self._arrays

    @property
    def sizes(self) -> np.ndarray:
        return self._index()[0]

    def __len__(self):
        return self.stream.sentences

    def __getitem__(self, index):
        sizes, pointers = self._index()
        start = int(pointers[index]) // self.stream.dtype.itemsize
        return torch.from_numpy(self.stream.read(start, start + int(sizes[index])))


class BlockCosts:
    """Costs of ``n`` stream blocks (``size`` each, the last ``last``) indexable like an array by index
    arrays; a full array is never stored."""

    def __init__(self, n: int, size: int, last: int):
        self.n, self.size, self.last = n, size, last

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        index = np.asarray(index)
        if index.ndim == 0:
            return self.last if int(index) == self.n - 1 else self.size
        return np.where(index == self.n - 1, self.last, self.size).astype(np.int64)

    def stable_sort(self, order: np.ndarray) -> np.ndarray:
        """``order`` stably sorted by cost (``np.argsort(kind="mergesort")``'s result) without a sort: only a
        shorter last block moves, to the front."""
        if self.last == self.size:
            return order
        is_last = order == self.n - 1
        return np.concatenate([order[is_last], order[~is_last]])

    def sorted_values(self) -> np.ndarray:
        """All costs in increasing order (what a length-grouped pass cuts, whatever its permutation)."""
        out = np.full(self.n, self.size, dtype=np.int64)
        out[0] = self.last
        return out


class StreamBlockDataset(FairseqDataset):
    """Block ``i`` of a ``TokenStream``: tokens ``[block i, block (i + 1))``, the last block shorter."""

    def __init__(self, stream: TokenStream, block: int):
        if block <= 0:
            raise ValueError(f"block length must be > 0, got {block}")
        self.stream, self.block = stream, block
        self.n = -(-stream.tokens // block)
        self.costs = BlockCosts(self.n, min(block, stream.tokens), stream.tokens - (self.n - 1) * block)

    def __getitem__(self, index):
        start = int(index) * self.block
        return torch.from_numpy(self.stream.read(start, min(start + self.block, self.stream.tokens)))

    def __len__(self):
        return self.n

    def num_tokens(self, index):
        return int(self.costs[index])

    def size(self, index):
        return int(self.costs[index])

    @property
    def sizes(self):
        """The block lengths as an array (O(blocks): for small data and tests; the schedule uses ``costs``)."""
        return self.costs[np.arange(self.n)]

    @property
    def supports_prefetch(self):
        return False
