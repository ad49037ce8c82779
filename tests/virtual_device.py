"""An accelerator stand-in for CPU-only tests: real numbers, an accelerator's device rules, host syncs recorded.

Inside ``with VirtualDevice() as dev:``, ``.to(dev.device)`` and factories given ``device=dev.device`` make
tensors that compute on the CPU but report the ``meta`` device, so code that follows its inputs' device
keeps them there, and code that does not is caught as it would be on CUDA:

- an op that mixes such a tensor with a CPU tensor of one or more dimensions raises ``CrossDeviceError``
  (0-dim CPU tensors pass as scalars, copies may cross, and advanced indexing accepts CPU index tensors,
  as on CUDA);
- every read of device data by the host (``.item()``, ``bool()``, ``int()``, ``.tolist()``, ``.cpu()``,
  ``nonzero``, boolean-mask indexing, ...) is appended to ``dev.syncs`` as (op, absolute file:line of the caller).

Unlike the ``meta`` device or fake tensors, data-dependent code (decoding loops) runs, so its device
handling can be checked too.
"""

import os
import traceback
from typing import List, Tuple

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

aten = torch.ops.aten
DEVICE = torch.device("meta")
CPU = torch.device("cpu")

# Ops whose result the host must wait for: a Python value or an output shape that depends on the data.
SYNC_OPS = {
    aten._local_scalar_dense.default, aten.equal.default, aten.nonzero.default, aten.masked_select.default,
    aten._unique2.default, aten.unique_consecutive.default, aten.unique_dim.default,
    aten.repeat_interleave.Tensor, aten.bincount.default,
}
INDEX_OPS = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}
TRANSFER_OPS = {aten._to_copy.default, aten.copy_.default}
_HERE = os.path.abspath(__file__)
_TORCH = os.path.dirname(torch.__file__)


class CrossDeviceError(RuntimeError):
    """A CPU tensor met a device tensor in one op (CUDA would refuse it too)."""


def _caller() -> str:
    """file:line of the innermost frame outside torch and this module."""
    for frame in reversed(traceback.extract_stack()):
        path = os.path.abspath(frame.filename)
        if path != _HERE and not path.startswith(_TORCH):
            return f"{path}:{frame.lineno}"
    return "?"


class DeviceTensor(torch.Tensor):
    """A CPU tensor (``elem``) that reports the virtual device."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    @staticmethod
    def __new__(cls, elem: torch.Tensor, owner: "VirtualDevice"):
        r = torch.Tensor._make_wrapper_subclass(
            cls, elem.size(), strides=elem.stride(), storage_offset=elem.storage_offset(),
            dtype=elem.dtype, layout=elem.layout, device=DEVICE, requires_grad=elem.requires_grad,
        )
        r.elem, r.owner = elem, owner
        return r

    def __repr__(self):
        return f"DeviceTensor({self.elem!r})"

    def tolist(self):  # torch refuses tolist() on subclasses; on an accelerator it is a device -> host copy
        self.owner.syncs.append(("tolist", _caller()))
        return self.elem.tolist()

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        # Reached when no VirtualDevice mode is active on this thread (e.g. autograd's engine).
        owner = next(t.owner for t in tree_leaves((args, kwargs)) if isinstance(t, DeviceTensor))
        return owner.run(func, args, kwargs or {})


class _FromData(TorchFunctionMode):
    """``torch.tensor(data, device=...)`` copies its data below the dispatcher: build on the CPU, then move."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.tensor, torch.as_tensor) and kwargs.get("device") is not None \
                and torch.device(kwargs["device"]) == DEVICE:
            return func(*args, **dict(kwargs, device=CPU)).to(DEVICE)
        return func(*args, **kwargs)


class VirtualDevice(TorchDispatchMode):
    """The dispatch mode that makes, checks and records device tensors; see the module doc."""

    device = DEVICE

    def __init__(self):
        super().__init__()
        self.syncs: List[Tuple[str, str]] = []
        self._from_data = _FromData()

    def __enter__(self):
        self._from_data.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._from_data.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return self.run(func, args, kwargs or {})

    def run(self, func, args, kwargs):
        """Check and record ``func`` as the device would see it, then run it on the CPU tensors behind."""
        leaves = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if any(t.device == DEVICE and not isinstance(t, DeviceTensor) for t in leaves):
            raise RuntimeError(f"{func}: a meta tensor without data (made past VirtualDevice) at {_caller()}")
        on_device = any(isinstance(t, DeviceTensor) for t in leaves)
        target = kwargs.get("device")
        target = None if target is None else torch.device(target)
        if on_device:
            _check_devices(func, args, kwargs)
            if _syncs(func, args, target):
                self.syncs.append((str(func), _caller()))
        if target == DEVICE:
            kwargs = dict(kwargs, device=CPU)
        returned = {}  # id of a CPU tensor handed to func -> what to give back if func returns it (in-place ops)

        def unwrap(t):
            if isinstance(t, torch.Tensor):
                returned[id(t.elem if isinstance(t, DeviceTensor) else t)] = t
                return t.elem if isinstance(t, DeviceTensor) else t
            return t

        out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))
        if target == CPU or not (on_device or target == DEVICE):
            return out

        def wrap(t):
            if not isinstance(t, torch.Tensor):
                return t
            return returned[id(t)] if id(t) in returned else DeviceTensor(t, self)

        return tree_map(wrap, out)


def _syncs(func, args, target) -> bool:
    """Whether ``func`` on device tensors makes the host wait for the device."""
    if func in SYNC_OPS:
        return True
    if func == aten._to_copy.default:
        return target == CPU
    if func == aten.copy_.default:
        return not isinstance(args[0], DeviceTensor)
    if func in INDEX_OPS:  # a boolean mask index becomes nonzero() on the device
        return any(t is not None and t.dtype in (torch.bool, torch.uint8) for t in args[1])
    return False


def _check_devices(func, args, kwargs) -> None:
    """Raise as CUDA does when a CPU tensor (other than a 0-dim scalar) meets device tensors."""
    if func in TRANSFER_OPS:
        return
    checked = (args[:1] + args[2:]) if func in INDEX_OPS else args  # index tensors may stay on the CPU
    for t in tree_leaves((checked, kwargs)):
        if isinstance(t, torch.Tensor) and not isinstance(t, DeviceTensor) and t.dim() > 0:
            raise CrossDeviceError(
                f"{func}: a {t.device} tensor of shape {tuple(t.shape)} meets device tensors at {_caller()}"
            )
