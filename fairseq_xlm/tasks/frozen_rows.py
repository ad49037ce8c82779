"""``--freeze-old-embeddings N``: the token-embedding rows and output biases of the vocabulary a model had
before ``fairseq_xlm.cli.add_language`` grew it stay exactly as they are for the first N updates.

Their gradients are zeroed after every backward of those updates (so they add nothing to the gradient norm
or to the optimiser's moments), and their values are put back after every optimiser step (so weight decay,
or moments carried in a resumed optimiser state, cannot move them either). From update N on they train.
"""

import json
import os
import weakref
from typing import Optional

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

RECORD = "add_language.json"  # written by fairseq_xlm.cli.add_language beside the data-bin's dict.txt
EMBED, BIAS = "embeddings.embed_tokens.weight", "output_bias"


def old_vocab(data_dir: str) -> int:
    """Rows of the vocabulary before ``add_language`` (its ``add_language.json``'s ``old_vocab``)."""
    path = os.path.join(data_dir, RECORD)
    if not os.path.isfile(path):
        raise ValueError(f"--freeze-old-embeddings: {path} missing; only a data-bin written by "
                         f"fairseq_xlm.cli.add_language says which embedding rows are old")
    with open(path, encoding="utf-8") as f:
        return int(json.load(f)["old_vocab"])


class FrozenRows:
    """Rows ``[0, rows)`` of the token embeddings and output bias held fixed while ``update_num < updates``."""

    def __init__(self, rows: int, updates: int):
        self.rows, self.updates = rows, updates
        self.params, self.saved, self.active = [], [], False
        self._hook = None

    def _find(self, model) -> None:
        named = dict(model.named_parameters())
        self.params = [p for name, p in named.items() if name.endswith(EMBED) or name.endswith("encoder." + BIAS)]
        if not self.params:
            raise ValueError("--freeze-old-embeddings: the model has no encoder token embeddings")
        for p in self.params:
            if p.size(0) <= self.rows:
                raise ValueError(f"--freeze-old-embeddings: the model has {p.size(0)} vocabulary rows, not more "
                                 f"than the {self.rows} old ones of add_language.json")
        self.saved = [p.detach()[: self.rows].clone() for p in self.params]
        ref = weakref.ref(self)
        # optimisers are built after the task, and fairseq may rebuild them: a global hook that finds this object
        self._hook = register_optimizer_step_post_hook(lambda *_: (ref() and ref().restore()))

    def start(self, model, update_num: int) -> None:
        """Before the forward of update ``update_num``."""
        self.active = update_num < self.updates
        if self.active and not self.params:
            self._find(model)
        if not self.active and self._hook is not None:
            self._hook.remove()
            self._hook, self.saved = None, []

    def after_backward(self) -> None:
        """Zero the old rows' gradients (while active)."""
        if self.active:
            for p in self.params:
                if p.grad is not None:
                    p.grad[: self.rows] = 0

    def restore(self) -> None:
        """Put the old rows back (after an optimiser step, while active)."""
        if self.active:
            with torch.no_grad():
                for p, saved in zip(self.params, self.saved):
                    p[: self.rows] = saved.to(p.dtype)


def build(data_dir: str, updates: int) -> Optional[FrozenRows]:
    """The task's FrozenRows for ``--freeze-old-embeddings updates`` (None when 0)."""
    if updates < 0:
        raise ValueError(f"--freeze-old-embeddings {updates}: must be >= 0")
    return FrozenRows(old_vocab(data_dir), updates) if updates else None
