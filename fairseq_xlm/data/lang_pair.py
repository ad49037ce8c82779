"""Translation samples that carry language ids, and the containers the unsupervised_mt task batches them in.

* ``LangPairDataset``: a ``LanguagePairDataset`` whose batches also hold ``net_input["src_langs"]`` and
  ``net_input["tgt_langs"]`` (B,), the language-embedding ids ``XlmMtModel`` reads; with
  ``exact_batches`` (evaluation sets) no sentence is lost to ``--required-batch-size-multiple``.
* ``SourceDataset``: encoder inputs as the authors feed them, ``</s> s </s>`` (fairseq binarizes ``s </s>``),
  optionally noised; training fetches it with ``draw(index, key)`` so that the noise is new at every use.
* ``DrawnPairs``: one step of the unsupervised_mt schedule: ``{id, source, target}`` items fetched with a draw
  key, collated by a ``LangPairDataset``.
* ``KeyedDatasets``: several datasets behind one, each batch drawn from one of them and tagged with its
  key (``sample["step"]``); validation uses it so that every sentence is scored exactly once.
"""

from collections import OrderedDict
from typing import Dict

import numpy as np
import torch
from fairseq.data import BaseWrapperDataset, FairseqDataset, LanguagePairDataset

from .step_dataset import fetch


def _set_epoch(dataset, epoch):
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


class LangPairDataset(BaseWrapperDataset):
    """A LanguagePairDataset whose batches carry ``src_langs`` / ``tgt_langs`` in ``net_input``."""

    def __init__(self, dataset: LanguagePairDataset, src_lang_id: int, tgt_lang_id: int,
                 exact_batches: bool = False):
        super().__init__(dataset)
        self.src_lang_id = src_lang_id
        self.tgt_lang_id = tgt_lang_id
        self.exact_batches = exact_batches

    def batch_by_size(self, indices, max_tokens=None, max_sentences=None, required_batch_size_multiple=1):
        # fairseq drops the last batch when its size is not a multiple of --required-batch-size-multiple
        # (default 8; fairseq issue #5036): evaluation sets must keep every sentence.
        if self.exact_batches:
            required_batch_size_multiple = 1
        return self.dataset.batch_by_size(indices, max_tokens, max_sentences, required_batch_size_multiple)

    def collater(self, samples):
        batch = self.dataset.collater(samples)
        if batch:
            src = batch["net_input"]["src_tokens"]
            batch["net_input"]["src_langs"] = torch.full((src.size(0),), self.src_lang_id, dtype=torch.long)
            batch["net_input"]["tgt_langs"] = torch.full((src.size(0),), self.tgt_lang_id, dtype=torch.long)
        return batch

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        return True  # evaluation sets: fixed noise; training noise comes with each Draw (DrawnPairs)


class SourceDataset(BaseWrapperDataset):
    """``</s>`` + a ``s </s>`` sentence (noised if ``dataset`` draws noise): the authors' encoder input."""

    def __init__(self, dataset, eos: int):
        super().__init__(dataset)
        self.eos = eos
        self._sizes = np.asarray(dataset.sizes) + 1

    @property
    def sizes(self):
        return self._sizes

    def num_tokens(self, index):
        return int(self._sizes[index])

    def size(self, index):
        return int(self._sizes[index])

    def draw(self, index, key):
        tokens = fetch(self.dataset, index, key)
        return torch.cat([tokens.new_full((1,), self.eos), tokens])

    def __getitem__(self, index):
        return self.draw(index, (0, 0))  # evaluation: fixed noise


class DrawnPairs(FairseqDataset):
    """The items of a ``LangPairDataset`` fetched with a draw key (fresh noise per use), collated by it."""

    def __init__(self, pair: LangPairDataset):
        self.pair = pair
        inner = pair.dataset
        self.src, self.tgt = inner.src, inner.tgt

    def __len__(self):
        return len(self.src)

    def draw(self, index, key):
        return {"id": index, "source": fetch(self.src, index, key), "target": self.tgt[index]}

    def __getitem__(self, index):
        return self.draw(index, (0, 0))

    def collater(self, samples):
        return self.pair.collater(samples)


class KeyedDatasets(FairseqDataset):
    """Concatenated datasets whose batches never mix sources; ``collater`` adds ``sample["step"] = key``."""

    def __init__(self, datasets: Dict[str, FairseqDataset]):
        super().__init__()
        if not datasets:
            raise ValueError("KeyedDatasets needs at least one dataset")
        self.datasets = OrderedDict(datasets)
        self.keys = list(self.datasets)
        lengths = [len(d) for d in self.datasets.values()]
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    def _locate(self, index):
        k = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return k, int(index - self.offsets[k])

    def _split(self, indices):
        """Global indices -> {k: local indices} (order kept)."""
        indices = np.asarray(indices, dtype=np.int64)
        which = np.searchsorted(self.offsets, indices, side="right") - 1
        return {k: indices[which == k] - self.offsets[k] for k in range(len(self.keys))}

    def __len__(self):
        return int(self.offsets[-1])

    def __getitem__(self, index):
        k, local = self._locate(index)
        return {"key": k, "item": self.datasets[self.keys[k]][local]}

    def collater(self, samples):
        if not samples:
            return {}
        k = samples[0]["key"]
        if any(s["key"] != k for s in samples):
            raise RuntimeError("KeyedDatasets: a batch mixes datasets; batch with KeyedDatasets.batch_by_size")
        batch = self.datasets[self.keys[k]].collater([s["item"] for s in samples])
        if batch:
            batch["step"] = self.keys[k]
        return batch

    def num_tokens(self, index):
        k, local = self._locate(index)
        return self.datasets[self.keys[k]].num_tokens(local)

    def size(self, index):
        k, local = self._locate(index)
        return self.datasets[self.keys[k]].size(local)

    def ordered_indices(self):
        return np.concatenate(
            [d.ordered_indices() + self.offsets[k] for k, d in enumerate(self.datasets.values())]
        ).astype(np.int64)

    def filter_indices_by_size(self, indices, max_sizes):
        kept, ignored = [], []
        for k, local in self._split(indices).items():
            dataset = self.datasets[self.keys[k]]
            ok, bad = dataset.filter_indices_by_size(local, max_sizes)
            kept.append(np.asarray(ok, dtype=np.int64) + self.offsets[k])
            ignored.extend(int(i) + int(self.offsets[k]) for i in bad)
        return np.concatenate(kept), ignored

    def batch_by_size(self, indices, max_tokens=None, max_sentences=None, required_batch_size_multiple=1):
        batches = []
        for k, local in self._split(indices).items():
            if len(local) == 0:
                continue
            sub = self.datasets[self.keys[k]].batch_by_size(
                local, max_tokens=max_tokens, max_sentences=max_sentences,
                required_batch_size_multiple=required_batch_size_multiple,
            )
            batches.extend(np.asarray(b, dtype=np.int64) + self.offsets[k] for b in sub)
        return batches

    @property
    def supports_prefetch(self):
        return False

    def set_epoch(self, epoch):
        super().set_epoch(epoch)
        for dataset in self.datasets.values():
            _set_epoch(dataset, epoch)
