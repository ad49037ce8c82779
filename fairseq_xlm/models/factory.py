"""Build XLM models outside fairseq-train (conversion, tests, benchmarks) from an architecture name."""

from argparse import Namespace
from types import SimpleNamespace
from typing import Optional, Sequence

from fairseq.data import Dictionary
from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY

from .xlm_mt import XlmMtConfig, XlmMtModel
from .xlm_transformer import XlmConfig, XlmModel


def model_config(arch: str, **overrides):
    """The dataclass config of ``arch`` with fairseq's precedence: explicit overrides, preset, defaults."""
    model_cls = ARCH_MODEL_REGISTRY.get(arch)
    if model_cls not in (XlmModel, XlmMtModel):
        known = sorted(a for a, m in ARCH_MODEL_REGISTRY.items() if m in (XlmModel, XlmMtModel))
        raise ValueError(f"unknown fairseq_xlm architecture --arch {arch!r}; known: {', '.join(known)}")
    cfg = XlmMtConfig() if model_cls is XlmMtModel else XlmConfig()
    unknown = [k for k in overrides if not hasattr(cfg, k)]
    if unknown:
        raise ValueError(f"unknown model option(s) {unknown} for --arch {arch}")
    args = Namespace(**overrides)
    ARCH_CONFIG_REGISTRY[arch](args)
    for key, value in vars(args).items():
        if hasattr(cfg, key):
            setattr(cfg, key, value)
    return model_cls, cfg


def build_model(arch: str, dictionary: Dictionary, langs: Sequence[str],
                tgt_dictionary: Optional[Dictionary] = None, **overrides):
    """An ``xlm_transformer`` or ``xlm_mt`` model for ``dictionary`` and ``langs`` (a fake minimal task)."""
    model_cls, cfg = model_config(arch, **overrides)
    task = SimpleNamespace(
        source_dictionary=dictionary, target_dictionary=tgt_dictionary or dictionary, langs=list(langs)
    )
    return model_cls.build_model(cfg, task)
