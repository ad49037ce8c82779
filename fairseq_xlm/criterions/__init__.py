"""fairseq_xlm criterions (registered by explicit imports)."""
from . import xlm_lm  # noqa: F401
from . import xlm_classification  # noqa: F401
from . import xlm_glue  # noqa: F401
