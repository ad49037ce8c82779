"""XLM models: the encoder (``xlm_transformer``) and the encoder-decoder (``xlm_mt``)."""

from . import xlm_mt, xlm_transformer  # noqa: F401
from .xlm_mt import XlmMtModel  # noqa: F401
from .xlm_transformer import XlmModel  # noqa: F401
