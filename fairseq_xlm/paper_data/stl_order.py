"""The order in which GCC's ``std::unordered_map<std::string, ...>`` (libstdc++) iterates its keys.

fastBPE's ``learnbpe`` numbers the characters of the corpus in the order it meets them while iterating its word
counts (an ``unordered_map``), and breaks ties between equally frequent pairs by those numbers. Its codes are
therefore only reproducible with that iteration order, which is a function of the keys' insertion order, of
``std::hash<std::string>`` (``_Hash_bytes``, a MurmurHash2 variant, seed 0xc70f6907) and of the bucket counts
the prime rehash policy picks. Both are stable across libstdc++ releases since GCC 5.

How libstdc++ links nodes: one singly linked list; a node whose bucket is empty goes to the front of the list,
any other node to the front of its bucket's run; a rehash re-links the nodes in list order by the same rule.
So after processing a sequence, buckets are ordered by their first node's position (latest first) and the nodes
of a bucket by position (latest first): one stable sort per rehash (``_regroup``)."""

from typing import List, Sequence

import numpy as np

_MASK = (1 << 64) - 1
_MUL = (0xC6A4A793 << 32) + 0x5BD1E995
_SEED = 0xC70F6907
# Bucket counts of a map growing one key at a time (max_load_factor 1): 13 at the first key, then the prime
# policy's next bucket count above twice the current one; measured with g++ (tests check it against g++).
BUCKETS = [13, 29, 59, 127, 257, 541, 1109, 2357, 5087, 10273, 20753, 42043, 85229, 172933, 351061, 712697,
           1447153, 2938679, 5967347, 12117689, 24607243, 49969847, 101473717, 206062531, 418451333, 849749479,
           1725587117, 3504151727]


def _shift_mix(v: int) -> int:
    return v ^ (v >> 47)


def std_hash(data: bytes) -> int:
    """``std::hash<std::string>`` of libstdc++ on 64-bit platforms (``std::_Hash_bytes(p, len, 0xc70f6907)``)."""
    n = len(data)
    h = (_SEED ^ (n * _MUL)) & _MASK
    aligned = n & ~7
    for i in range(0, aligned, 8):
        block = (_shift_mix((int.from_bytes(data[i:i + 8], "little") * _MUL) & _MASK) * _MUL) & _MASK
        h = ((h ^ block) * _MUL) & _MASK
    if n & 7:
        h = ((h ^ int.from_bytes(data[aligned:], "little")) * _MUL) & _MASK
    h = (_shift_mix(h) * _MUL) & _MASK
    return _shift_mix(h)


def _regroup(order: np.ndarray, buckets: np.ndarray) -> np.ndarray:
    """The list after linking the nodes of ``order`` one by one (``buckets``: their bucket, in that order)."""
    pos = np.arange(len(order))
    first = np.full(int(buckets.max()) + 1 if len(buckets) else 0, len(order), np.int64)
    np.minimum.at(first, buckets, pos)
    # primary key: the bucket's first position, latest first; secondary: the node's position, latest first
    return order[np.lexsort((-pos, -first[buckets]))]


def iteration_order(keys: Sequence[str]) -> List[int]:
    """Indices of ``keys`` (distinct, in insertion order) in the order an ``unordered_map<string, T>`` filled
    by inserting them one at a time iterates them."""
    hashes = np.array([std_hash(k.encode("utf-8")) for k in keys], dtype=np.uint64)
    order, size = np.zeros(0, np.int64), 0
    if not keys:
        return []
    for i, buckets in enumerate(BUCKETS):
        # keys [size, end) go in with ``buckets`` buckets; then the map rehashes to the next count
        end = min(len(keys), buckets)  # the key after the map holds ``buckets`` keys triggers the next rehash
        order = np.concatenate([order, np.arange(size, end)])
        order = _regroup(order, (hashes[order] % np.uint64(buckets)).astype(np.int64))
        size = end
        if size == len(keys):
            return order.tolist()
    raise ValueError(f"{len(keys)} distinct words: more than libstdc++'s bucket table here covers")
