"""``--optimizer xlm_pkm_adam``: fairseq's Adam for the model, the authors' ``--mem_values_optimizer`` for
the memory values.

fairseq runs one optimizer per training run. The authors run two: their ``--optimizer`` for every parameter
but the memory values, and ``--mem_values_optimizer`` (default ``adam,lr=0.001``, a constant learning rate;
``sparseadam`` when ``--mem_sparse``) for the values. This optimizer is that pair behind fairseq's one
optimizer interface: fairseq's Adam (its options, LR scheduler, clipping, fp32 grads) on the model, and the
values' optimizer, built from the same ``name,key=value`` string as the authors', on the parameters tagged
``param_group = "mem_values"`` (every memory's ``values.weight``). The LR scheduler drives the model's
learning rate only; the values keep theirs. Gradients of both are scaled and clipped together, as one
gradient, which handles sparse value gradients (``--mem-sparse``). ``--mem-values-optimizer ''`` trains
the values with the model's Adam (dense gradients only). The same tag also lets fairseq's ``composite``
optimizer (hydra config) give the values any fairseq optimizer and scheduler.
"""

from dataclasses import dataclass, field
from typing import Dict, List

import torch
from fairseq.optim import register_optimizer
from fairseq.optim.adam import FairseqAdam, FairseqAdamConfig

from ..models.memory import VALUES_GROUP

# the authors' get_optimizer names that have a plain torch counterpart
_TORCH = {"adam": torch.optim.Adam, "sparseadam": torch.optim.SparseAdam, "sgd": torch.optim.SGD,
          "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop, "adamax": torch.optim.Adamax}


@dataclass
class XlmPkmAdamConfig(FairseqAdamConfig):
    mem_values_optimizer: str = field(default="adam,lr=0.001", metadata={
        "help": "the memory values' optimizer, as the authors' --mem_values_optimizer ('name,key=value,...': "
                "adam, sparseadam, sgd, adagrad, rmsprop, adamax; beta1/beta2 for Adam's betas); adam becomes "
                "sparseadam with --mem-sparse; '' = the model's Adam"})


def parse_optimizer(spec: str, sparse: bool):
    """'adam,lr=0.001,beta1=0.9' -> (torch optimizer class, kwargs); adam -> sparseadam for sparse values."""
    name, *items = [x for x in spec.split(",") if x]
    kwargs: Dict[str, object] = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            kwargs[key] = float(value)
        except ValueError:
            raise ValueError(f"--mem-values-optimizer {spec!r}: {item!r} is not key=number") from None
    if "beta1" in kwargs or "beta2" in kwargs:
        kwargs["betas"] = (kwargs.pop("beta1", 0.9), kwargs.pop("beta2", 0.999))
    if sparse and name == "adam":
        name = "sparseadam"
    if name not in _TORCH:
        raise ValueError(f"--mem-values-optimizer {spec!r}: unknown optimizer {name!r}; one of {sorted(_TORCH)}")
    if sparse and name not in ("sparseadam", "sgd", "adagrad"):
        raise ValueError(f"--mem-values-optimizer {spec!r}: {name} takes no sparse gradients (--mem-sparse); "
                         f"use adam (sparseadam), sgd or adagrad")
    return _TORCH[name], kwargs


class _Pair(torch.optim.Optimizer):
    """Two torch optimizers stepped together; ``param_groups`` lists the model's groups first."""

    def __init__(self, model_opt: torch.optim.Optimizer, values_opt: torch.optim.Optimizer):
        self.model_opt, self.values_opt = model_opt, values_opt

    @property
    def param_groups(self) -> List[dict]:
        return self.model_opt.param_groups + self.values_opt.param_groups

    @property
    def state(self):
        return {**self.model_opt.state, **self.values_opt.state}

    def step(self, closure=None):
        loss = self.model_opt.step(closure)
        self.values_opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True):
        self.model_opt.zero_grad(set_to_none)
        self.values_opt.zero_grad(set_to_none)

    def state_dict(self):
        return {"model": self.model_opt.state_dict(), "mem_values": self.values_opt.state_dict()}

    def load_state_dict(self, state_dict):
        self.model_opt.load_state_dict(state_dict["model"])
        self.values_opt.load_state_dict(state_dict["mem_values"])


@register_optimizer("xlm_pkm_adam", dataclass=XlmPkmAdamConfig)
class XlmPkmAdam(FairseqAdam):
    """fairseq's Adam plus the memory values' optimizer (see the module doc)."""

    def __init__(self, cfg: XlmPkmAdamConfig, params):
        params = list(params)
        values = [p for p in params if getattr(p, "param_group", None) == VALUES_GROUP]
        self.values_opt = None
        if not cfg.mem_values_optimizer or not values:
            super().__init__(cfg, params)
            if any(getattr(p, "sparse_grad", False) for p in values):
                raise ValueError("--mem-sparse needs the values' own optimizer (--mem-values-optimizer adam,...)")
            return
        super().__init__(cfg, [p for p in params if getattr(p, "param_group", None) != VALUES_GROUP])
        cls, kwargs = parse_optimizer(cfg.mem_values_optimizer, any(getattr(p, "sparse_grad", False) for p in values))
        self.values_opt = cls(values, **kwargs)
        self._optimizer = _Pair(self._optimizer, self.values_opt)

    @property
    def supports_flat_params(self):
        return self.values_opt is None

    @property
    def supports_memory_efficient_fp16(self):
        return self.values_opt is None and super().supports_memory_efficient_fp16

    def set_lr(self, lr):
        """The scheduler's learning rate, for the model's parameters only (the values keep theirs)."""
        groups = self.param_groups if self.values_opt is None else self._optimizer.model_opt.param_groups
        for group in groups:
            group["lr"] = lr

    def clip_grad_norm(self, max_norm, aggregate_norm_fn=None):
        """fairseq's norm and clipping over all gradients, sparse value gradients included."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if not any(g.is_sparse for g in grads):
            return super().clip_grad_norm(max_norm, aggregate_norm_fn)
        squares = [(g.coalesce().values() if g.is_sparse else g).float().pow(2).sum() for g in grads]
        total = torch.stack(squares).sum().sqrt()
        if aggregate_norm_fn is not None:
            total = aggregate_norm_fn(total)
        if max_norm > 0:
            coef = (max_norm / (total + 1e-6)).clamp(max=1)
            for p in self.params:
                if p.grad is not None:
                    p.grad = p.grad.coalesce() * coef if p.grad.is_sparse else p.grad.mul_(coef)
        return total
