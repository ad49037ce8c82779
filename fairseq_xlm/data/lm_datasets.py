"""Samples for XLM's language-model objectives, built by stacking small wrappers.

    monolingual:  TokenBlockDataset (continuous stream, `</s>` between sentences) -> MonoStreamDataset
    parallel:     two line-aligned datasets -> TlmPairDataset (`</s> s1 </s> </s> s2 </s>`, positions restart)
    objective:    XlmMaskDataset (MLM/TLM: 80/10/10, uniform or frequency-smoothed choice)
                  or CausalTargetDataset (CLM: next-token targets)

Every item is a dict ``{"tokens", "langs", "positions" (or None)}`` until the objective wrapper adds
``"source"`` and ``"target"`` (pad where nothing is predicted); ``collate_lm`` right-pads a list of them.
"""

import math
from typing import Optional

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset, Dictionary, FairseqDataset, data_utils


class MonoStreamDataset(BaseWrapperDataset):
    """Blocks of a monolingual stream, each token tagged with the language id."""

    def __init__(self, blocks, lang_id: int):
        super().__init__(blocks)
        self.lang_id = lang_id

    def __getitem__(self, index):
        tokens = self.dataset[index]
        return {"tokens": tokens, "langs": torch.full_like(tokens, self.lang_id), "positions": None}


class SizedDataset(FairseqDataset):
    """A dataset whose subclasses set ``self.sizes`` (tokens per sample): length, sizes and size order."""

    sizes: np.ndarray

    def __len__(self):
        return len(self.sizes)

    def num_tokens(self, index):
        return int(self.sizes[index])

    def size(self, index):
        return int(self.sizes[index])

    def ordered_indices(self):
        return np.argsort(self.sizes, kind="mergesort")

    @property
    def supports_prefetch(self):
        return False


class TlmPairDataset(SizedDataset):
    """A parallel pair as one TLM sample: ``</s> s1 </s>`` + ``</s> s2 </s>`` (the authors' concatenation).

    fairseq binarizes each sentence as ``s </s>``; we prepend ``</s>`` to each side. Positions restart at 0
    for the second sentence and each side carries its own language id.
    """

    def __init__(self, src, tgt, src_lang_id: int, tgt_lang_id: int, eos: int):
        if len(src) != len(tgt):
            raise ValueError(f"parallel data is not line-aligned: {len(src)} vs {len(tgt)} sentences")
        self.src, self.tgt = src, tgt
        self.src_lang_id, self.tgt_lang_id = src_lang_id, tgt_lang_id
        self.eos = eos
        self.sizes = np.asarray(src.sizes) + np.asarray(tgt.sizes) + 2

    def __getitem__(self, index):
        bos = torch.tensor([self.eos])
        first = torch.cat([bos, self.src[index]])
        second = torch.cat([bos, self.tgt[index]])
        return {
            "tokens": torch.cat([first, second]),
            "langs": torch.cat(
                [torch.full_like(first, self.src_lang_id), torch.full_like(second, self.tgt_lang_id)]
            ),
            "positions": torch.cat([torch.arange(len(first)), torch.arange(len(second))]),
        }


def mask_scores(dictionary: Dictionary, alpha: float, mask_idx: int) -> np.ndarray:
    """The authors' ``sample_alpha`` scores: ``max(count, 1) ** -alpha`` per symbol, 0 for special symbols."""
    counts = np.asarray(dictionary.count, dtype=np.float64)
    scores = np.maximum(counts, 1.0) ** -alpha
    scores[: dictionary.nspecial] = 0.0
    scores[mask_idx] = 0.0
    for i, sym in enumerate(dictionary.symbols):
        if sym.startswith("madeupword"):
            scores[i] = 0.0
    return scores


class XlmMaskDataset(BaseWrapperDataset):
    """BERT-style masking of an item's tokens: chooses ``mask_prob`` of them, then 80/10/10.

    The choice is uniform (fairseq's MaskTokensDataset rule: ``int(p * n + U)`` positions) or, with
    ``sample_alpha > 0``, the authors' frequency-smoothed choice: exactly ``ceil(p * n)`` positions drawn
    without replacement with probability proportional to ``count(token) ** -alpha``, so rare tokens are
    predicted more often. Random replacements are drawn uniformly from the non-special vocabulary. One pass
    gives both the corrupted source and the target (pad where unmasked), seeded by (seed, epoch, pass, index).
    """

    def __init__(self, dataset, dictionary: Dictionary, mask_idx: int, seed: int, mask_prob: float = 0.15,
                 leave_unmasked_prob: float = 0.1, random_token_prob: float = 0.1, sample_alpha: float = 0.0):
        super().__init__(dataset)
        for name, p in (("--mask-prob", mask_prob), ("--leave-unmasked-prob", leave_unmasked_prob),
                        ("--random-token-prob", random_token_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if leave_unmasked_prob + random_token_prob > 1.0:
            raise ValueError("--leave-unmasked-prob + --random-token-prob must be <= 1")
        self.pad, self.mask_idx, self.seed = dictionary.pad(), mask_idx, seed
        self.mask_prob = mask_prob
        self.leave_unmasked_prob, self.random_token_prob = leave_unmasked_prob, random_token_prob
        self.scores = mask_scores(dictionary, sample_alpha, mask_idx) if sample_alpha > 0 else None
        self.random_ids = np.array(
            [i for i in range(dictionary.nspecial, len(dictionary)) if i != mask_idx], dtype=np.int64
        )
        self.epoch = 0

    def set_epoch(self, epoch):
        super().set_epoch(epoch)
        self.epoch = epoch

    def choose(self, tokens: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Boolean mask of the positions to predict."""
        n = len(tokens)
        chosen = np.zeros(n, dtype=bool)
        if self.scores is None:
            k = int(self.mask_prob * n + rng.random())
            chosen[rng.choice(n, k, replace=False)] = True
            return chosen
        weights = self.scores[tokens]
        eligible = int((weights > 0).sum())
        k = min(math.ceil(self.mask_prob * n), eligible)
        if k > 0:
            chosen[rng.choice(n, k, replace=False, p=weights / weights.sum())] = True
        return chosen

    def __getitem__(self, index):
        return self.draw(index, (self.epoch, 0))

    def draw(self, index, key):
        """The item with masks drawn from (seed, *key, index): ``key`` is (epoch, pass) in training, so every
        use of a sample gets new masks (see ``schedule.Draw``), and fixed for validation."""
        item = dict(self.dataset[index])
        tokens = item["tokens"].numpy()
        rng = np.random.default_rng((self.seed, *key, index))
        chosen = self.choose(tokens, rng)
        target = np.full_like(tokens, self.pad)
        target[chosen] = tokens[chosen]
        source = tokens.copy()
        # 80 % <mask>, 10 % random token, 10 % unchanged (with the default probabilities)
        u = rng.random(len(tokens))
        to_random = chosen & (u < self.random_token_prob)
        to_mask = chosen & (u >= self.random_token_prob + self.leave_unmasked_prob)
        source[to_mask] = self.mask_idx
        source[to_random] = rng.choice(self.random_ids, int(to_random.sum()))
        item["source"], item["target"] = torch.from_numpy(source), torch.from_numpy(target)
        return item


class CausalTargetDataset(BaseWrapperDataset):
    """CLM: the target at position t is the token at t + 1 (pad at the last position)."""

    def __init__(self, dataset, pad: int):
        super().__init__(dataset)
        self.pad = pad

    def __getitem__(self, index):
        item = dict(self.dataset[index])
        tokens = item["tokens"]
        item["source"] = tokens
        item["target"] = torch.cat([tokens[1:], tokens.new_full((1,), self.pad)])
        return item


def collate_lm(items, pad: int, causal: bool, step: Optional[str] = None):
    """Right-pad items to a batch: net_input (src_tokens, langs, positions, causal) and target."""
    if len(items) == 0:
        return {}

    def stack(key, value):
        return data_utils.collate_tokens([it[key] for it in items], value, left_pad=False)

    src = stack("source", pad)
    positions = None if items[0]["positions"] is None else stack("positions", 0)
    target = stack("target", pad)
    lengths = [len(it["source"]) for it in items]
    return {
        "step": step,
        "nsentences": len(items),
        "ntokens": int(src.ne(pad).sum()),
        "net_input": {
            "src_tokens": src,
            "src_lengths": src.ne(pad).sum(dim=1),
            "langs": stack("langs", 0),
            "positions": positions,
            "causal": causal,
            # known here on the host: lets the model skip masks (and use flash attention) without a sync
            "padded": min(lengths) < max(lengths),
        },
        "target": target,
    }
