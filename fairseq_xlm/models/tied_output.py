"""The tied output layer, ``x @ W.T + b``, with a weight gradient that autograd can add in place.

With ``F.linear`` the gradient of ``W`` arrives as a transposed view of the matmul's result. ``W`` is also
the token embedding, so autograd sums two gradients for it, and it adds in place only into a plain
contiguous tensor: with the view it allocates a new (V, C) tensor and reads the view with a stride of V,
which cost 2.6 % of an MLM training step on the CPU (vocab 32k, d=512; profiled with bench/profile_step.py).
Here the backward returns ``g.T @ x`` directly (contiguous), so the embedding's gradient is added into it.
The products are the ones ``F.linear`` computes; under autocast they run in autocast's dtype, as
``F.linear``'s would, and the casts of ``x`` and ``W`` made in the forward are kept for the backward.
"""

import contextlib
from typing import Optional

import torch
from torch import Tensor


class _TiedOutput(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        device = x.device.type
        autocast = torch.amp.is_autocast_available(device)  # not on e.g. the meta device
        if autocast and torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        with torch.autocast(device, enabled=False) if autocast else contextlib.nullcontext():
            out = torch.mm(x, weight.t()) if bias is None else torch.addmm(bias, x, weight.t())
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.to(x.dtype)
        grad_x = grad.mm(weight) if ctx.needs_input_grad[0] else None
        grad_w = grad.t().mm(x) if ctx.needs_input_grad[1] else None  # (V, C), contiguous
        grad_b = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def tied_output(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear(x, weight, bias)`` for ``x`` of any leading shape (..., C), with a contiguous weight gradient."""
    lead = x.shape[:-1]
    out = _TiedOutput.apply(x.reshape(-1, x.size(-1)), weight, bias)
    return out.view(*lead, weight.size(0))
