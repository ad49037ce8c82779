"""Samples for cross-lingual classification (XNLI, Bible genres): one text or a pair, a label, a language.

A sentence pair becomes the authors' XNLI input ``</s> s1 </s> s2 </s>`` (positions 0, 1, 2, ... over the
whole pair, not restarted as in TLM) with the language id on every token; a single text is ``</s> s1 </s>``.
fairseq binarizes each sentence as ``s </s>``, so we only prepend one ``</s>``. Like the authors
(``--max_len 256``), each ``</s> s </s>`` is cut to ``max_sentence_tokens`` tokens, keeping its final ``</s>``.

Training batches are the authors' (``ParallelDataset.get_iterator(shuffle=True)`` and the epoch loop of
their ``xnli.py``): every epoch a fresh random permutation, cut into batches, the batches in random order,
and the epoch stops after the batch that reaches ``epoch_size`` sentences. ``epoch_batches`` draws them
from (seed, epoch) alone, so data-loader workers, resumed runs and reruns see the same batches.
"""

from typing import List, Optional, Sequence

import numpy as np
import torch
from fairseq.data import data_utils

from .lm_datasets import SizedDataset
from .schedule import random_batches


def read_labels(path: str, label_ids: dict, expected: int) -> np.ndarray:
    """Label ids of a text file with one label a line; unknown labels and wrong counts are errors."""
    ids = []
    with open(path, encoding="utf-8", newline="\n") as f:
        for number, line in enumerate(f, start=1):
            label = line.rstrip("\n").rstrip("\r").strip()
            if label not in label_ids:
                raise ValueError(
                    f"{path}:{number}: unknown label {label!r}; known labels (labels.txt): {', '.join(label_ids)}"
                )
            ids.append(label_ids[label])
    if len(ids) != expected:
        raise ValueError(f"{path}: {len(ids)} labels for {expected} examples; the files are not line-aligned")
    return np.asarray(ids, dtype=np.int64)


def read_scores(path: str, expected: int) -> np.ndarray:
    """Float labels (a regression: GLUE's STS-B scores) of a text file, one a line; wrong counts are errors."""
    values = []
    with open(path, encoding="utf-8", newline="\n") as f:
        for number, line in enumerate(f, start=1):
            try:
                values.append(float(line.strip()))
            except ValueError:
                raise ValueError(f"{path}:{number}: {line.strip()!r} is not a number (a regression's score)") from None
    if len(values) != expected:
        raise ValueError(f"{path}: {len(values)} scores for {expected} examples; the files are not line-aligned")
    return np.asarray(values, dtype=np.float32)


def truncate(tokens: torch.Tensor, max_tokens: int, eos: int) -> torch.Tensor:
    """``tokens`` (ending in </s>) cut to ``max_tokens``, the last kept token replaced by </s>."""
    if len(tokens) <= max_tokens:
        return tokens
    out = tokens[:max_tokens].clone()
    out[-1] = eos
    return out


class XlmClassificationDataset(SizedDataset):
    """One language's examples: ``input0`` (and ``input1`` for pairs) token datasets plus label ids."""

    def __init__(self, input0, labels: np.ndarray, lang_id: int, eos: int, pad: int,
                 input1=None, max_sentence_tokens: int = 256):
        if max_sentence_tokens < 3:
            raise ValueError(f"--max-sentence-tokens {max_sentence_tokens} is too small (at least 3)")
        if input1 is not None and len(input1) != len(input0):
            raise ValueError(f"sentence pairs are not line-aligned: {len(input0)} vs {len(input1)} sentences")
        if len(labels) != len(input0):
            raise ValueError(f"{len(labels)} labels for {len(input0)} examples")
        self.input0, self.input1, self.labels = input0, input1, labels
        self.lang_id, self.eos, self.pad = lang_id, eos, pad
        self.max_sentence_tokens = max_sentence_tokens
        # Length of "</s> s </s>" per sentence after truncation; a pair shares its middle </s>.
        first = np.minimum(np.asarray(input0.sizes) + 1, max_sentence_tokens)
        self.sizes = first
        if input1 is not None:
            self.sizes = first + np.minimum(np.asarray(input1.sizes) + 1, max_sentence_tokens) - 1

    def __getitem__(self, index):
        bos = torch.tensor([self.eos], dtype=torch.long)
        tokens = truncate(torch.cat([bos, self.input0[index].long()]), self.max_sentence_tokens, self.eos)
        if self.input1 is not None:
            second = truncate(torch.cat([bos, self.input1[index].long()]), self.max_sentence_tokens, self.eos)
            tokens = torch.cat([tokens, second[1:]])
        # a class id, or a float score for a regression (GLUE's STS-B)
        return {"id": index, "tokens": tokens, "label": self.labels[index].item(), "lang": self.lang_id}

    def collater(self, samples: Sequence[dict]):
        return collate_classification(samples, self.pad)


def collate_classification(samples: Sequence[dict], pad: int) -> dict:
    """Right-padded batch: net_input (src_tokens, src_lengths, langs (B, T)), target (B,), lang (B,)."""
    if len(samples) == 0:
        return {}
    tokens = data_utils.collate_tokens([s["tokens"] for s in samples], pad, left_pad=False)
    lang = torch.tensor([s["lang"] for s in samples], dtype=torch.long)
    lengths = tokens.ne(pad).sum(dim=1)
    return {
        "id": torch.tensor([s["id"] for s in samples], dtype=torch.long),
        "nsentences": len(samples),
        "ntokens": int(lengths.sum()),
        "net_input": {
            "src_tokens": tokens,
            "src_lengths": lengths,
            # One language per example; on padding the id is irrelevant (those states are masked).
            "langs": lang[:, None].expand_as(tokens).contiguous(),
        },
        "target": torch.tensor([s["label"] for s in samples],
                               dtype=torch.float if isinstance(samples[0]["label"], float) else torch.long),
        "lang": lang,
    }


def epoch_seed(seed: int, epoch: int) -> int:
    """A 32-bit seed for (seed, epoch): a new permutation every epoch, the same one for the same --seed."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def epoch_batches(sizes: np.ndarray, indices: np.ndarray, seed: int, epoch: int, max_sentences: Optional[int],
                  max_tokens: Optional[int], group_by_size: bool, epoch_size: int) -> List[np.ndarray]:
    """One training epoch: the authors' ``random_batches`` drawn from (seed, epoch), up to and including the batch that
    brings the sentence count to ``epoch_size`` (the authors' ``ns >= epoch_size``); <= 0 = every batch."""
    rng = np.random.RandomState(epoch_seed(seed, epoch))
    batches = random_batches(np.asarray(sizes), np.asarray(indices), rng, max_sentences, max_tokens, group_by_size)
    if epoch_size > 0:
        seen = np.cumsum([len(b) for b in batches])
        batches = batches[: int(np.searchsorted(seen, epoch_size)) + 1]
    return batches


def load_label_set(path: str) -> List[str]:
    """The ordered class names of ``labels.txt`` (one a line; their order gives the class ids)."""
    try:
        with open(path, encoding="utf-8") as f:
            labels = [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: no label list; write the class names one a line (fairseq_xlm.cli.prepare_xnli does)"
        ) from None
    if len(set(labels)) != len(labels) or len(labels) < 2:
        raise ValueError(f"{path}: needs at least two distinct labels, got {labels}")
    return labels

