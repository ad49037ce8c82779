"""fairseq_xlm: Lample & Conneau's cross-lingual language model pretraining (XLM) as a fairseq plugin.

Use it with ``fairseq-train --user-dir $(fairseq-xlm-userdir) ...`` or ``import fairseq_xlm``.
Importing it registers the models, tasks and criteria, and makes checkpoint loading work under
torch >= 2.6 (``weights_only=True``) through an allow-list (see ``safe_load``), makes checkpoint
writes survive a kill (``checkpoint_files``) and prints user errors as one line (``errors``).
"""

import os as _os

from . import errors as _errors  # standard library only

# one line instead of a traceback for our user errors (a refused checkpoint, a bad data-bin, a bad flag), also
# under FAIRSEQ_XLM_REGISTER=0: the commands that need neither torch nor fairseq run so (their imports cost
# about 6 s of CPU on a slow 2-core machine)
_errors.install_excepthook()

if _os.environ.get("FAIRSEQ_XLM_REGISTER", "1") != "0":
    from . import quiet

    with quiet.root_logger_kept():  # importing fairseq sets the root logger to DEBUG
        from . import checkpoint_files, dist_timeout, safe_load
        from . import models  # noqa: E402,F401  (registers xlm_transformer, xlm_mt and their architectures)
        from . import criterions, optim, tasks  # noqa: E402,F401  (registers tasks, criteria, xlm_pkm_adam)

    safe_load.install()
    checkpoint_files.install()  # atomic checkpoint writes and copies, resume past a torn checkpoint_last.pt
    dist_timeout.install()  # FAIRSEQ_XLM_DIST_TIMEOUT: process-group timeout, so a frozen rank fails its peers
    quiet.install()  # hydra's deprecation warnings and torch's pin_memory warning under fairseq's commands

__version__ = "0.1.0"
