"""What ``unsupervised_mt`` translates raw input with: ``build_dataset_for_inference`` (fairseq-interactive,
the hub's ``translate``), ``inference_step`` that gives batches their language ids (fairseq-interactive
rebuilds its batches from ``src_tokens`` and ``src_lengths`` alone) and ``translating(src, tgt)``, the
direction for one call of the hub."""

import contextlib

import numpy as np
import torch
from fairseq.data import ListDataset

from ..errors import ConfigError


class MtInferenceMixin:
    """For a task with ``direction`` ((src, tgt) or None), ``_check_direction`` and ``_pair``."""

    def build_dataset_for_inference(self, src_tokens, src_lengths, constraints=None):
        """Sentences binarized as ``s </s>`` -> sources ``</s> s </s>`` of the task's direction
        (``--source-lang``/``--target-lang``), batched with their language ids, nothing dropped."""
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
