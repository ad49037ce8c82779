"""fairseq_xlm tasks (registered by explicit imports)."""
from . import xlm_pretrain  # noqa: F401
from . import xnli  # noqa: F401
from . import unsupervised_mt  # noqa: F401
from . import glue  # noqa: F401
