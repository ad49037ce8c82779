"""What ``unsupervised_mt`` translates raw input with: ``build_dataset_for_inference`` (fairseq-interactive,
the hub's ``translate``), ``inference_step`` that gives batches their language ids (fairseq-interactive
rebuilds its batches from ``src_tokens`` and ``src_lengths`` alone) and ``translating(src, tgt)``, the
direction for one call of the hub. fairseq-interactive without ``--bpe`` reads its input as dictionary pieces:
raw text then becomes ``<unk>``s and a confident translation of nothing, so that case is refused, naming the
data-bin's ``spm.model`` to pass."""

import contextlib
import os

import numpy as np
import torch
from fairseq.data import ListDataset

from ..errors import ConfigError


class MtInferenceMixin:
    """For a task with ``direction`` ((src, tgt) or None), ``data_dir``, ``_check_direction`` and ``_pair``."""

    def build_bpe(self, args):
        """fairseq's; with no ``--bpe`` while the data-bin has an ``spm.model``, remember it: the input must
        then be pieces already, which ``build_dataset_for_inference`` checks."""
        bpe = super().build_bpe(args)
        spm = os.path.join(self.data_dir, "spm.model")
        self._spm_not_applied = spm if bpe is None and os.path.isfile(spm) else None
        return bpe

    def _check_pieces(self, src_tokens) -> None:
        """Refuse input that became mostly ``<unk>`` because no ``--bpe`` cut it into the data-bin's pieces."""
        spm = getattr(self, "_spm_not_applied", None)
        if spm is None:
            return
        unk = self.source_dictionary.unk()
        total = sum(max(len(t) - 1, 0) for t in src_tokens)  # without the </s> each line ends with
        unknown = sum(int((t == unk).sum()) for t in src_tokens)
        if total and 2 * unknown >= total:
            raise ConfigError(
                f"{unknown} of the input's {total} tokens are <unk>: without --bpe the input is read as "
                f"dictionary pieces, so raw text cannot be translated; pass --bpe sentencepiece "
                f"--sentencepiece-model {spm} (the data-bin's model)")

    def build_dataset_for_inference(self, src_tokens, src_lengths, constraints=None):
        """Sentences binarized as ``s </s>`` -> sources ``</s> s </s>`` of the task's direction
        (``--source-lang``/``--target-lang``), batched with their language ids, nothing dropped."""
        self._check_pieces(src_tokens)
        if constraints is not None:
            raise ConfigError("unsupervised_mt does not support --constraints")
        if self.direction is None:
            raise ConfigError("translating needs a direction: give --source-lang and --target-lang "
                             "(the hub: translate(sentences, src, tgt))")
        if len(src_tokens) == 0:
            raise ConfigError("nothing to translate: the input is empty")
        sizes = np.asarray([int(n) for n in src_lengths], dtype=np.int64)
        return self._pair(ListDataset(list(src_tokens), sizes), None, *self.direction, shuffle=False)

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        """fairseq's, after adding the direction's ``src_langs``/``tgt_langs`` to a batch that lacks them."""
        net_input = sample["net_input"]
        if "src_langs" not in net_input or "tgt_langs" not in net_input:
            if self.direction is None:
                raise ConfigError("translating needs a direction: give --source-lang and --target-lang")
            tokens = net_input["src_tokens"]
            for key, lang in zip(("src_langs", "tgt_langs"), self.direction):
                net_input.setdefault(key, torch.full((tokens.size(0),), self.lang_id(lang), dtype=torch.long,
                                                     device=tokens.device))
        return super().inference_step(generator, models, sample, prefix_tokens, constraints)

    @contextlib.contextmanager
    def translating(self, src: str, tgt: str):
        """The direction ``src -> tgt`` (checked against the model's languages) while the block runs."""
        if not (src and tgt):
            raise ConfigError("give both the source and the target language")
        self._check_direction(src, tgt)
        before, self.direction = self.direction, (src, tgt)
        try:
            yield
        finally:
            self.direction = before
