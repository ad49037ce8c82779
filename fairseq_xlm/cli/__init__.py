"""Command-line entry points (``python -m fairseq_xlm.cli.NAME``), thin layers over the library.

    prepare, prepare_xnli   raw text -> data-bins (shared BPE, joined dictionary); classification splits
    get_data                the paper's corpora by name (wiki, para, nmt, xnli) -> plain text
    bible                   the shared Bible corpus -> raw splits
    convert                 the authors' / HF / fairseq_xlm checkpoints, both ways
    add_language            a new language for a pretrained XLM (add_language_report: its study's table)
    evaluate_xnli, bleu     results tables: accuracy per language, BLEU two ways
    evaluate_retrieval      cross-lingual retrieval P@1 of an encoder on a parallel split
    curves                  learning curves (PNG) from fairseq's logs
    demo                    the helpers of recipes/demo.sh (random init, genre data, RESULTS.md)
    userdir                 ``fairseq-xlm-userdir``: the folder to pass to fairseq's --user-dir
    verify                  every checksum of a data-bin's manifest.json (the load-time check is sizes only)

Nothing in the library (models, data, tasks, criterions, formats) imports these modules. What they share is
below (standard library only): fairseq-style log lines, and flags made from a config dataclass.
"""

import argparse
import dataclasses
import logging
import sys

LOG_FORMAT = "%(asctime)s | %(levelname)s | %(name)s | %(message)s"  # fairseq's own format


def setup_logging(level: int = logging.INFO, stream=None) -> None:
    """Log like fairseq-train does (to stdout by default), replacing handlers set up earlier."""
    logging.basicConfig(format=LOG_FORMAT, level=level, stream=stream or sys.stdout, force=True)


def config_parser(cls, prog: str, doc: str) -> argparse.ArgumentParser:
    """argparse flags from a config dataclass: one flag per field, help from its metadata."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool:
            parser.add_argument(flag, action="store_true", help=f.metadata["help"])
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        parser.add_argument(flag, type=f.type, required=required, help=f.metadata["help"],
                            **({} if required else {"default": default}))
    return parser
