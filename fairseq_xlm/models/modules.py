"""Building blocks of the XLM Transformer: embeddings, attention (SDPA + incremental state), layers.

The layout follows Lample & Conneau's model: post-LayerNorm residual blocks, GELU feed-forward,
LayerNorm (eps 1e-12) on the summed token + position + language embeddings, and a decoder layer that
puts cross-attention (with its own LayerNorm) between self-attention and the feed-forward block.
"""

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from fairseq.incremental_decoding_utils import with_incremental_state
from torch import Tensor, nn

from .dropout import dropout, keep_mask


def sinusoidal_table(n_pos: int, dim: int) -> Tensor:
    """The authors' fixed sinusoidal table: even columns sin, odd columns cos."""
    pos = torch.arange(n_pos, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.empty(n_pos, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table.float()


class XlmEmbeddings(nn.Module):
    """Token + position (+ language) embeddings, then LayerNorm and dropout."""

    def __init__(self, cfg, dictionary, n_langs: int, embed_tokens: Optional[nn.Embedding] = None):
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.padding_idx = dictionary.pad()
        self.max_positions = cfg.max_positions
        if embed_tokens is None:
            embed_tokens = nn.Embedding(len(dictionary), dim, padding_idx=self.padding_idx)
            nn.init.normal_(embed_tokens.weight, mean=0.0, std=dim**-0.5)
            nn.init.zeros_(embed_tokens.weight[self.padding_idx])
        self.embed_tokens = embed_tokens
        self.embed_positions = nn.Embedding(cfg.max_positions, dim)
        if cfg.sinusoidal_embeddings:
            with torch.no_grad():
                self.embed_positions.weight.copy_(sinusoidal_table(cfg.max_positions, dim))
            self.embed_positions.weight.requires_grad = False
        else:
            nn.init.normal_(self.embed_positions.weight, mean=0.0, std=dim**-0.5)
        self.embed_langs = None
        if not cfg.no_lang_embeddings and n_langs > 1:
            self.embed_langs = nn.Embedding(n_langs, dim)
            nn.init.normal_(self.embed_langs.weight, mean=0.0, std=dim**-0.5)
        self.layernorm_embedding = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.dropout = cfg.dropout

    def forward(
        self, tokens: Tensor, positions: Optional[Tensor], langs: Optional[Tensor], offset: int = 0
    ) -> Tensor:
        """tokens, positions: (B, T); langs: (B, T), (B,) or None; without ``positions``, the first token is
        at position ``offset`` (incremental decoding)."""
        if positions is None:
            # Default positions are below offset + width: checked from the shape, without reading the data.
            self.check_position(offset + tokens.size(1) - 1)
            positions = default_positions(tokens, self.padding_idx)
            if offset:
                positions = positions + offset
        elif positions.device.type == "cpu":
            # Explicit (TLM) positions must be read: free on the host, but a host sync per forward on an
            # accelerator, where the embedding lookup's own bounds assert stops the run instead.
            self.check_position(int(positions.max()))
        x = self.embed_tokens(tokens) + self.embed_positions(positions)
        if self.embed_langs is not None and langs is not None:
            if langs.dim() == 1:
                langs = langs[:, None]
            x = x + self.embed_langs(langs)
        x = self.layernorm_embedding(x)
        return dropout(x, self.dropout, self.training)

    def check_position(self, largest: int) -> None:
        """One clear error for a position beyond the table (instead of an index error deep in the lookup)."""
        if largest >= self.max_positions:
            raise ValueError(
                f"position {largest} is beyond the model's --max-positions {self.max_positions}; "
                f"use shorter samples (--tokens-per-sample / --max-source-positions)"
            )


def default_positions(tokens: Tensor, padding_idx: int) -> Tensor:
    """0, 1, 2, ... over non-pad tokens (equal to arange for right-padded batches, as in XLM and HF)."""
    not_pad = tokens.ne(padding_idx)
    return (torch.cumsum(not_pad, dim=1) - 1).clamp_(min=0) * not_pad


def attention_mask(
    key_padding_mask: Optional[Tensor], causal: bool, tgt_len: int, src_len: int, device: torch.device
) -> Optional[Tensor]:
    """Boolean (B|1, 1, T, S) mask on ``device``, True = may attend; None when every key may be seen.

    A padded query always keeps its own diagonal key so that no row is fully masked (SDPA would
    return NaN there); padded rows are zeroed after each layer anyway.
    """
    if key_padding_mask is None and not causal:
        return None
    mask = torch.ones(1, 1, tgt_len, src_len, dtype=torch.bool, device=device)
    if causal:
        mask = torch.tril(mask, diagonal=src_len - tgt_len)
    if key_padding_mask is not None:
        mask = mask & ~key_padding_mask[:, None, None, :]
        if tgt_len == src_len:
            mask = mask | torch.eye(tgt_len, dtype=torch.bool, device=device)
    return mask


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], dropout_p: float, is_causal: bool) -> Tensor:
    """softmax(q k^T / sqrt(d) + mask) v with dropout on the weights: q (B, H, T, d), k and v (B, H, S, d).

    SDPA everywhere but in CPU training with attention dropout: there SDPA falls back to its plain
    ("math") path, which also computes bf16 inputs in fp32 and draws torch's costly Bernoulli mask. The
    explicit path below keeps the input dtype (bf16 under autocast: the products run at bf16 speed; the
    softmax accumulates in fp32 inside torch's kernel), multiplies by :func:`keep_mask`, and scales the (B, H, T, d)
    context by 1 / (1 - p) instead of the (B, H, T, S) weights. Equal to SDPA without dropout (tested).
    """
    if dropout_p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal and mask is None
        )
    return explicit_attention(q, k, v, mask, dropout_p, is_causal)


def explicit_attention(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], dropout_p: float,
                       is_causal: bool) -> Tensor:
    """The attention of :func:`attend` written out (the CPU training path; exact softmax attention at p=0)."""
    scores = torch.matmul(q * q.size(-1) ** -0.5, k.transpose(-2, -1))
    if mask is None and is_causal:
        t, s = scores.shape[-2:]
        mask = torch.ones(t, s, dtype=torch.bool, device=q.device).tril_(s - t)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1) * keep_mask(scores.shape, dropout_p, q.device, scores.dtype)
    return torch.matmul(weights, v).mul_(1.0 / (1.0 - dropout_p))


@with_incremental_state
class XlmAttention(nn.Module):
    """Multi-head attention through ``F.scaled_dot_product_attention``, with fairseq incremental state."""

    def __init__(self, dim: int, heads: int, dropout: float, kv_dim: Optional[int] = None):
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"--encoder-embed-dim {dim} is not divisible by --encoder-attention-heads {heads}")
        kv_dim = kv_dim or dim
        self.heads = heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv_dim, dim)
        self.v_proj = nn.Linear(kv_dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        return x.view(b, t, self.heads, c // self.heads).transpose(1, 2)

    def forward(
        self,
        x: Tensor,
        mask: Optional[Tensor] = None,
        kv: Optional[Tensor] = None,
        incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
        is_causal: bool = False,
        rows: Optional[Tensor] = None,
    ) -> Tensor:
        """x: (B, T, C); kv: encoder states (B, S, C) for cross-attention; mask: see attention_mask().

        ``rows``: flat indices into the B * T queries, ascending (self-attention without incremental state);
        the result is then (N, C), those rows only. On the CPU only their queries are computed (see
        :meth:`forward_rows`, which reads the rows on the host); elsewhere, without a host sync, every query
        is and the output projection runs on the rows alone."""
        if rows is not None and x.device.type == "cpu":
            return self.forward_rows(x, mask, rows, is_causal)
        b, t, c = x.shape
        q = self._split(self.q_proj(x))
        cache = self.get_incremental_state(incremental_state, "kv") if incremental_state is not None else None
        if kv is not None and cache is not None and "k" in cache:
            k, v = cache["k"], cache["v"]  # encoder keys/values are computed once per sentence
        else:
            src = x if kv is None else kv
            k, v = self._split(self.k_proj(src)), self._split(self.v_proj(src))
            if kv is None and cache is not None and "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
        if incremental_state is not None:
            self.set_incremental_state(incremental_state, "kv", {"k": k, "v": v})
        out = attend(q, k, v, mask, self.dropout if self.training else 0.0, is_causal)
        if rows is not None:
            return self.out_proj(out.transpose(1, 2).reshape(b * t, c).index_select(0, rows))
        return self.out_proj(out.transpose(1, 2).reshape(b, t, c))

    def forward_rows(self, x: Tensor, mask: Optional[Tensor], rows: Tensor, is_causal: bool) -> Tensor:
        """Self-attention output (N, C) at ``rows`` (ascending flat indices into B * T) only.

        Keys and values come from every position; queries, scores, softmax, context and output projection
        only from the rows (an MLM step's last layer: 15 % of them). The rows' queries are packed per
        sentence into (B, M) slots, M = the most rows in one sentence (read on the host); empty slots get
        zero queries and every key, and are dropped after attention. Each row sees the keys its full-model
        query would (the rows of ``mask``, or of the causal triangle), so the result is the full layer's at
        those rows (tested, values and gradients)."""
        b, t, c = x.shape
        k, v = self._split(self.k_proj(x)), self._split(self.v_proj(x))
        sent, pos = torch.div(rows, t, rounding_mode="floor"), rows % t
        counts = torch.bincount(sent, minlength=b)
        slot = torch.arange(rows.numel(), device=rows.device) - (counts.cumsum(0) - counts)[sent]
        m = int(counts.max()) if rows.numel() else 0
        q_rows = self.q_proj(x.reshape(b * t, c).index_select(0, rows))
        q = self._split(q_rows.new_zeros(b, m, c).index_put((sent, slot), q_rows))
        if mask is not None:
            allowed = mask.expand(b, 1, t, t)[sent, 0, pos]  # (N, T): each row's keys
        elif is_causal:
            allowed = torch.arange(t, device=x.device)[None, :] <= pos[:, None]
        else:
            allowed = None
        if allowed is not None:
            full = torch.ones(b, m, t, dtype=torch.bool, device=x.device)
            allowed = full.index_put((sent, slot), allowed)[:, None]
        out = attend(q, k, v, allowed, self.dropout if self.training else 0.0, False)
        return self.out_proj(out.transpose(1, 2)[sent, slot].reshape(-1, c))

    def reorder_incremental_state(self, incremental_state, new_order: Tensor):
        """Follow beam search's reordering of hypotheses."""
        cache = self.get_incremental_state(incremental_state, "kv")
        if cache is not None:
            cache = {key: val.index_select(0, new_order) for key, val in cache.items()}
            self.set_incremental_state(incremental_state, "kv", cache)
        return incremental_state


class XlmLayer(nn.Module):
    """Post-LayerNorm Transformer layer; with ``cross_attention`` it is the authors' decoder layer.

    ``memories`` ({"in": m, "after": m}, see ``memory.build_memories``): a product-key memory in place of the
    feed-forward block (no FFN weights then) and/or one added after the layer's last LayerNorm, as the
    authors' ``--mem_enc_positions 4`` / ``4+``; their outputs are added without dropout, as theirs."""

    def __init__(self, cfg, cross_attention: bool = False, memories: Optional[Dict[str, nn.Module]] = None):
        super().__init__()
        dim, eps = cfg.encoder_embed_dim, cfg.layer_norm_eps
        self.dropout = cfg.dropout
        self.self_attn = XlmAttention(dim, cfg.encoder_attention_heads, cfg.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=eps)
        self.encoder_attn = self.encoder_attn_layer_norm = None
        if cross_attention:
            self.encoder_attn = XlmAttention(dim, cfg.encoder_attention_heads, cfg.attention_dropout)
            self.encoder_attn_layer_norm = nn.LayerNorm(dim, eps=eps)
        memories = memories or {}
        self.memory_in, self.memory_after = memories.get("in"), memories.get("after")
        self.fc1 = self.fc2 = None
        if self.memory_in is None:
            self.fc1 = nn.Linear(dim, cfg.encoder_ffn_embed_dim)
            self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, dim)
        self.activation = F.gelu if cfg.activation_fn == "gelu" else F.relu
        self.final_layer_norm = nn.LayerNorm(dim, eps=eps)

    def forward(
        self,
        x: Tensor,
        self_mask: Optional[Tensor],
        keep: Optional[Tensor],
        causal: bool = False,
        encoder_out: Optional[Tensor] = None,
        encoder_mask: Optional[Tensor] = None,
        incremental_state=None,
        rows: Optional[Tensor] = None,
    ) -> Tensor:
        """x: (B, T, C); keep: (B, T, 1) float, 0 on padding (re-zeroed after the layer, as the authors).

        ``rows`` (flat indices into B * T, self-attention layers only): the layer's output at those positions
        alone, (N, C). Keys and values still come from every position; everything after attention is
        per position, so the other rows' work is skipped (an MLM step's last layer: 85 % of its FFN)."""
        attn = self.self_attn(x, self_mask, incremental_state=incremental_state, is_causal=causal, rows=rows)
        if rows is not None:
            if encoder_out is not None:
                raise ValueError("XlmLayer: rows= is for self-attention layers only (no encoder_out)")
            x = x.reshape(-1, x.size(-1)).index_select(0, rows)
            keep = None if keep is None else keep.reshape(-1, 1).index_select(0, rows)
        x = self.self_attn_layer_norm(x + dropout(attn, self.dropout, self.training))
        if self.encoder_attn is not None and encoder_out is not None:
            attn = self.encoder_attn(x, encoder_mask, kv=encoder_out, incremental_state=incremental_state)
            x = self.encoder_attn_layer_norm(x + dropout(attn, self.dropout, self.training))
        x = self.feed_forward(x)
        if keep is not None:
            x = x * keep
        return x

    def feed_forward(self, x: Tensor) -> Tensor:
        """The per-position end of the layer: FFN (or the memory in its place), LayerNorm, memory after it."""
        if self.memory_in is not None:
            x = self.final_layer_norm(x + self.memory_in(x))
        else:
            h = self.fc2(self.activation(self.fc1(x)))
            x = self.final_layer_norm(x + dropout(h, self.dropout, self.training))
        if self.memory_after is not None:
            x = x + self.memory_after(x)
        return x
