"""Product-key memory layers (Lample et al. 2019, "Large Memory Layers with Product Keys"), as the authors'
XLM code has them (``xlm/model/memory/``): the same function and parameter names, written for speed.

A memory maps a state x (..., C) to a weighted sum of value rows: a query network turns x into one query
per head, each query's two halves are scored against two tables of ``n_keys`` half-keys, the best ``knn``
of each half are combined (``knn**2`` candidate slots out of ``n_keys**2``) and the best ``knn`` candidates,
rescored (softmax by default), weight their rows of an ``EmbeddingBag`` of values; the heads' reads are
summed. Differences from the authors' code, none of them numerical: every head is searched in one batched
product instead of a Python loop; ``pq_default`` (their faiss search) is computed as ``pq_fast``; the
shuffled-query and shuffled-index variants gather with one index; convolutional (image) query networks are
refused. Slot usage is accumulated on the device, without host syncs, for ``memory_usage``'s diagnostics.
"""

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dropout import dropout
from .memory_config import MemorySpec

# the suffix of value tables in parameter names (optimizer groups and sparse gradients key on it)
VALUES_SUFFIX = "values.weight"
VALUES_GROUP = "mem_values"  # fairseq's per-parameter group attribute (composite / xlm_pkm_adam)


class GroupedLinear(nn.Module):
    """``groups`` independent linear maps side by side (a 1x1 grouped convolution, the authors' layout)."""

    def __init__(self, n_in: int, n_out: int, groups: int, bias: bool):
        super().__init__()
        self.layer = nn.Conv1d(n_in, n_out, kernel_size=1, groups=groups, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x.unsqueeze(2)).squeeze(2)


def query_mlp(sizes, bias: bool, batchnorm: bool, groups: int = 1) -> nn.Sequential:
    """Linear (then grouped linear) layers with optional BatchNorm after each and ReLU between them."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if groups == 1 or i == 0:
            layers.append(nn.Linear(n_in, groups * n_out, bias=bias))
        else:
            layers.append(GroupedLinear(groups * n_in, groups * n_out, groups, bias))
        if batchnorm:
            layers.append(nn.BatchNorm1d(groups * n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class QueryNetwork(nn.Module):
    """x (N, C) -> queries (N, heads * k_dim): one MLP, one per head and half (multi), or them grouped."""

    def __init__(self, spec: MemorySpec):
        super().__init__()
        cfg = spec.cfg
        sizes, bias, bn = spec.query_sizes, not cfg.mem_no_query_bias, cfg.mem_query_batchnorm
        groups = 2 * spec.heads if cfg.mem_multi_query_net else 1
        self.split = False
        if cfg.mem_grouped_conv:
            self.query_mlps = query_mlp(sizes, bias, bn, groups)
        elif len(sizes) == 2:
            self.query_mlps = query_mlp([sizes[0], sizes[1] * groups], bias, bn)
        else:
            self.query_mlps = nn.ModuleList([query_mlp(sizes, bias, bn) for _ in range(groups)])
            self.split = True

    def forward(self, x: Tensor) -> Tensor:
        if self.split:
            outs = [mlp(x) for mlp in self.query_mlps]
            return torch.cat(outs, 1) if len(outs) > 1 else outs[0]
        return self.query_mlps(x)


def shuffle_order(dim: int, heads: int) -> Tensor:
    """Input dimensions per head for ``--mem-shuffle-query``: head 0 as is, head h interleaved in blocks of
    dim / 2**(h+1) (even blocks, then odd ones), flattened to (heads * dim,)."""
    order = [torch.arange(dim)]
    for h in range(1, heads):
        block = dim // 2 ** (h + 1)
        starts = list(range(0, dim, block))
        order.append(torch.cat([torch.arange(s, s + block) for s in starts[0::2] + starts[1::2]]))
    return torch.cat(order)


def random_keys(kind: str, n: int, dim: int, normalized: bool, seed: int) -> np.ndarray:
    """The authors' key draws: numpy's RandomState(seed), Gaussian or uniform in +-1/sqrt(dim) (nn.Linear's)."""
    rng = np.random.RandomState(seed)
    x = rng.randn(n, dim) if kind == "gaussian" else rng.uniform(-1 / math.sqrt(dim), 1 / math.sqrt(dim), (n, dim))
    if normalized:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def binary_keys(bits: int, k_dim: int) -> Tensor:
    """All 2**bits sign patterns (bit j of row i), scaled by 1/sqrt(k_dim)."""
    rows = torch.arange(2 ** bits)[:, None]
    signs = ((rows >> torch.arange(bits)[None, :]) & 1).float() * 2 - 1
    return signs / math.sqrt(k_dim)


class ProductKeyMemory(nn.Module):
    """A memory layer: (..., C) -> (..., C). ``shared_values``: the value weight of another memory to reuse."""

    def __init__(self, dim: int, spec: MemorySpec, shared_values: Optional[nn.Parameter] = None):
        super().__init__()
        cfg = spec.cfg
        self.dim, self.spec = dim, spec
        self.product, self.heads, self.knn, self.k_dim = spec.product, spec.heads, spec.knn, spec.k_dim
        self.n_keys, self.size = spec.n_keys, spec.size
        self.different_keys = not cfg.mem_no_use_different_keys
        self.modulo = cfg.mem_modulo_size != -1
        self.detach_input, self.normalize_query = cfg.mem_query_detach_input, cfg.mem_normalize_query
        self.temperature, self.softmax = cfg.mem_temperature, not cfg.mem_no_score_softmax
        self.subtract, self.l1_normalize = cfg.mem_score_subtract, cfg.mem_score_normalize
        self.input_dropout, self.query_dropout = cfg.mem_input_dropout, cfg.mem_query_dropout
        self.value_dropout = cfg.mem_value_dropout
        keys = self._initial_keys(cfg)
        if cfg.mem_no_keys_learn:
            self.register_buffer("keys", keys)
        else:
            self.keys = nn.Parameter(keys)
        self.values = nn.EmbeddingBag(spec.size, dim, mode="sum", sparse=cfg.mem_sparse)
        if shared_values is not None:
            self.values.weight = shared_values
        elif cfg.mem_value_zero_init:
            nn.init.zeros_(self.values.weight)
        else:
            nn.init.normal_(self.values.weight, mean=0.0, std=dim ** -0.5)
        self.values.weight.param_group = VALUES_GROUP  # the optimizer group (optim/pkm_adam.py, composite)
        self.values.weight.sparse_grad = cfg.mem_sparse
        self.query_proj = QueryNetwork(spec) if spec.query_sizes is not None else None
        if self.query_proj is not None and cfg.mem_no_query_net_learn:
            for p in self.query_proj.parameters():
                p.requires_grad = False
        self.register_buffer("query_order", shuffle_order(dim, spec.heads) if cfg.mem_shuffle_query else None,
                             persistent=False)
        if cfg.mem_shuffle_indices:  # drawn from torch's generator, as the authors; saved with the model
            self.register_buffer("head_permutations",
                                 torch.stack([torch.randperm(spec.n_indices) for _ in range(spec.heads)]))
        else:
            self.head_permutations = None
        self.usage: Optional[Tensor] = None  # (2, size): reads and summed weights per slot (see memory_usage)

    def _initial_keys(self, cfg) -> Tensor:
        half = self.k_dim // 2 if self.product else self.k_dim
        n = self.n_keys
        if cfg.mem_keys_type == "binary":
            return binary_keys(half, self.k_dim)
        draw = [(i, s) for i in range(self.heads) for s in ((2 * i, 2 * i + 1) if self.product else (i,))]
        if not self.different_keys:
            return torch.from_numpy(random_keys(cfg.mem_keys_type, n, half, cfg.mem_keys_normalized_init, 0))
        keys = [random_keys(cfg.mem_keys_type, n, half, cfg.mem_keys_normalized_init, seed) for _, seed in draw]
        shape = (self.heads, 2, n, half) if self.product else (self.heads, n, half)
        return torch.from_numpy(np.array(keys)).view(shape)

    def queries(self, x: Tensor) -> Tensor:
        """x (N, C) -> (N, heads, k_dim)."""
        n = x.size(0)
        if self.query_proj is not None:
            return self.query_proj(x).view(n, self.heads, self.k_dim)
        if self.query_order is not None:
            return x.index_select(1, self.query_order).view(n, self.heads, self.k_dim)
        return x.unsqueeze(1).expand(n, self.heads, self.k_dim)

    def _scores(self, q: Tensor, keys: Tensor) -> Tensor:
        """q (N, H, d) against keys (n, d) shared or (H, n, d) per head -> (N, H, n)."""
        if keys.dim() == 2:
            return F.linear(q, keys)
        return torch.matmul(q.transpose(0, 1), keys.transpose(1, 2)).transpose(0, 1)

    def search(self, q: Tensor):
        """The ``knn`` best slots of every query q (N, H, k_dim): scores and indices, each (N, H, knn)."""
        k = self.knn
        if not self.product:
            if self.normalize_query:
                q = q / q.norm(2, -1, keepdim=True)
            return self._scores(q, self.keys).topk(k, dim=-1, largest=True, sorted=True)
        half = self.k_dim // 2
        q1, q2 = q[..., :half], q[..., half:]
        if self.normalize_query:
            q1, q2 = q1 / q1.norm(2, -1, keepdim=True), q2 / q2.norm(2, -1, keepdim=True)
        k1, k2 = (self.keys[:, 0], self.keys[:, 1]) if self.different_keys else (self.keys, self.keys)
        s1, i1 = self._scores(q1, k1).topk(k, dim=-1, largest=True, sorted=True)
        s2, i2 = self._scores(q2, k2).topk(k, dim=-1, largest=True, sorted=True)
        n, h = q.shape[:2]
        both = (s1.unsqueeze(-1) + s2.unsqueeze(-2)).view(n, h, k * k)
        scores, best = both.topk(k, dim=-1, largest=True, sorted=True)
        # the slots of the k winners only (the authors build all k*k candidate slots, then gather)
        first, second = torch.div(best, k, rounding_mode="floor"), best % k
        return scores, i1.gather(-1, first) * self.n_keys + i2.gather(-1, second)

    def rescore(self, scores: Tensor) -> Tensor:
        """Temperature, softmax, subtraction and L1 normalisation of the k scores (the authors' order)."""
        if self.temperature != 1:
            scores = scores / self.temperature
        if self.softmax:
            scores = F.softmax(scores.float(), dim=-1).type_as(scores)
        if self.subtract == "min":
            scores = scores - scores.min(-1, keepdim=True)[0]
        elif self.subtract == "mean":
            scores = scores - scores.mean(-1, keepdim=True)
        elif self.subtract == "median":
            scores = scores - scores.median(-1, keepdim=True)[0]
        if self.l1_normalize:
            scores = scores / scores.norm(p=1, dim=-1, keepdim=True)
        return scores

    def forward(self, x: Tensor) -> Tensor:
        if self.detach_input:
            x = x.detach()
        shape = x.shape
        x = dropout(x.reshape(-1, self.dim), self.input_dropout, self.training)
        q = self.queries(x)
        if self.query_dropout > 0:
            q = dropout(q, self.query_dropout, self.training)
        scores, indices = self.search(q)  # (N, H, knn)
        if self.head_permutations is not None:
            perms = self.head_permutations.unsqueeze(0).expand(indices.size(0), -1, -1)
            indices = perms.gather(2, indices)
        if self.modulo:
            indices = indices % self.size
        scores = self.rescore(scores)
        n = x.size(0)
        weight = self.values.weight
        out = self.values(indices.reshape(n, -1), per_sample_weights=scores.reshape(n, -1).to(weight.dtype))
        out = dropout(out.to(scores.dtype), self.value_dropout, self.training)
        self._count(indices, scores)
        return out.view(shape[:-1] + (self.dim,))

    @torch.no_grad()
    def _count(self, indices: Tensor, scores: Tensor) -> None:
        """Add this batch's reads and weights per slot to ``usage`` (on the device: no host sync)."""
        if self.usage is None or self.usage.device != indices.device:
            self.usage = torch.zeros(2, self.size, device=indices.device)
        flat = indices.reshape(-1)
        self.usage[0].index_add_(0, flat, torch.ones_like(flat, dtype=self.usage.dtype))
        self.usage[1].index_add_(0, flat, scores.detach().reshape(-1).to(self.usage.dtype))

    def take_usage(self) -> Optional[Tensor]:
        """The usage accumulated since the last call (then reset), or None."""
        usage, self.usage = self.usage, None
        return usage

    def extra_repr(self) -> str:
        kind = "product keys" if self.product else "flat keys"
        return f"{kind}, slots={self.size}, heads={self.heads}, knn={self.knn}, k_dim={self.k_dim}"


def build_memories(cfg, dim: int, n_layers: int, positions: str, flag: str, shared: dict):
    """{layer: {"in"|"after": ProductKeyMemory}} for ``positions`` (``--mem-enc-positions`` or
    ``--mem-dec-positions``); ``shared`` is one dict per model, holding the value table that
    ``--mem-share-values`` gives every memory (encoder and decoder)."""
    from .memory_config import memory_spec, parse_positions

    if not getattr(cfg, "use_memory", False):
        if positions:
            raise ValueError(f"{flag} {positions!r} needs --use-memory")
        return {}
    spec = shared.get("spec") or shared.setdefault("spec", memory_spec(cfg, dim))
    out = {}
    for layer, where in parse_positions(positions, n_layers, flag):
        reuse = shared.get("values") if cfg.mem_share_values else None
        memory = ProductKeyMemory(dim, spec, shared_values=reuse)
        if cfg.mem_share_values:
            shared.setdefault("values", memory.values.weight)
        out.setdefault(layer, {})[where] = memory
    return out
