"""fairseq's ``--optimizer adam`` step on CPU with torch's ``_foreach`` ops: the same arithmetic, bit for bit.

fairseq runs its own Adam on CPU (the fused one needs CUDA): a Python loop of about ten tensor calls per
parameter. For the small models trained on CPU here (the demo's ``xlm_tiny``: 2 layers, d=64, 30 tensors)
that loop is a visible share of an update (docs/demo.md, "Where the time goes"). ``ForeachAdam`` applies the
same operations in the same order to every tensor of a group at once (``torch._foreach_*`` runs the same
per-tensor kernels), so weights, moments and losses are identical to fairseq's; only the Python overhead goes.

Our tasks switch a run's optimizer over at its first step (``use_foreach_adam``) when it is fairseq's Adam on
fp32 dense parameters without amsgrad; anything else (fp16/bf16 optimizers, ``xlm_pkm_adam``, GPU runs with
fairseq's fused Adam) is left as it is. The state (``step``, ``exp_avg``, ``exp_avg_sq`` per parameter) and the
param groups are shared with the replaced optimizer, so checkpoints, the LR scheduler and resuming see no
difference; torch's step hooks run as for any optimizer.
"""

import math
from collections import defaultdict

import torch
from fairseq.optim.adam import Adam, FairseqAdam


class ForeachAdam(Adam):
    """fairseq's ``Adam`` (fp32, no amsgrad) with the per-parameter loop done by ``torch._foreach_*`` ops."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            # parameters that missed a step (no gradient) have their own step count, hence step size
            by_step = defaultdict(lambda: ([], [], [], []))
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                params, grads, avgs, avg_sqs = by_step[state["step"]]
                params.append(p)
                grads.append(p.grad)
                avgs.append(state["exp_avg"])
                avg_sqs.append(state["exp_avg_sq"])
            for step, (params, grads, avgs, avg_sqs) in by_step.items():
                torch._foreach_mul_(avgs, beta1)
                torch._foreach_add_(avgs, grads, alpha=1 - beta1)
                torch._foreach_mul_(avg_sqs, beta2)
                torch._foreach_addcmul_(avg_sqs, grads, grads, value=1 - beta2)
                denom = torch._foreach_sqrt(avg_sqs)
                torch._foreach_add_(denom, group["eps"])
                step_size = group["lr"] * math.sqrt(1 - beta2**step) / (1 - beta1**step)
                if group["weight_decay"] != 0:
                    torch._foreach_add_(params, params, alpha=-group["weight_decay"] * group["lr"])
                torch._foreach_addcdiv_(params, avgs, denom, value=-step_size)
        return loss


def _eligible(inner: torch.optim.Optimizer) -> bool:
    if type(inner) is not Adam:
        return False
    for group in inner.param_groups:
        if group.get("amsgrad", False):
            return False
        for p in group["params"]:
            if p.dtype != torch.float32 or p.is_sparse or (p.grad is not None and p.grad.is_sparse):
                return False
            state = inner.state.get(p)
            if state and any(torch.is_tensor(v) and (v.dtype != torch.float32 or v.device != p.device)
                             for v in state.values()):
                return False
    return True


def use_foreach_adam(optimizer) -> bool:
    """Switch a fairseq ``adam`` optimizer (``FairseqAdam`` wrapping fairseq's CPU ``Adam``) to
    ``ForeachAdam``, sharing its state and param groups; True if the optimizer now runs ``ForeachAdam``."""
    if type(optimizer) is not FairseqAdam:
        return False
    inner = optimizer._optimizer
    if type(inner) is ForeachAdam:
        return True
    if getattr(optimizer, "_foreach_ineligible", False) or not _eligible(inner):
        optimizer._foreach_ineligible = True  # checked once per run
        return False
    # only Adam's own arguments: a loaded state adds torch's keys (differentiable, ...) to the defaults
    args = {k: v for k, v in inner.defaults.items() if k in ("lr", "betas", "eps", "weight_decay", "amsgrad")}
    new = ForeachAdam(inner.param_groups, **args)
    new.defaults = inner.defaults
    new.param_groups = inner.param_groups  # the LR scheduler sets lr on these very dicts
    new.state = inner.state
    optimizer._optimizer = new
    return True
