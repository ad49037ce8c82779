"""bf16 mixed precision for every task: ``--autocast-bf16`` runs the criterion's forward under
``torch.autocast(bfloat16)`` while the weights, gradients and optimizer state stay fp32.

Why not fairseq's own flags: ``--bf16`` implies ``--tpu`` (on a CPU machine the trainer then asks torch_xla
for a device and fails) and holds the model itself in bf16 (fp32 master copies in FP16Optimizer); ``--amp``
is CUDA fp16 autocast with loss scaling. Autocast needs neither: bf16 has fp32's exponent range, so no loss
scale, and the same flag works on CPUs with native bf16 (avx512_bf16 / AMX) and on GPUs. Backward runs
outside the autocast region, as PyTorch recommends; the matmuls it differentiates keep their bf16 inputs.
"""

from contextlib import nullcontext

import torch

AUTOCAST_HELP = ("bf16 mixed precision: the forward pass under torch.autocast(bfloat16), weights, gradients and "
                 "Adam state in fp32 (works on CPU and GPU; fairseq's --bf16 implies --tpu)")


def autocast_bf16(enabled: bool, model: torch.nn.Module):
    """``torch.autocast`` to bfloat16 on the device of ``model``'s weights when ``enabled``, else nothing."""
    if not enabled:
        return nullcontext()
    device = next(model.parameters()).device.type
    return torch.autocast(device_type=device, dtype=torch.bfloat16)
