"""Score hypotheses on stdin with both BLEU flavours (``fairseq_xlm.bleu``), as one markdown row.

    python -m fairseq_xlm.cli.bleu REF --lang es [--name ROW] [--no-header] [--score-only bleu|tok_bleu] < HYP
"""

import argparse
import logging
import sys
from typing import Dict, List, Optional, Sequence

from ..bleu import FLAVOURS, LABELS, BleuScorer
from . import setup_logging


def table_lines(name: str, scores: Dict[str, float], header: bool = True) -> List[str]:
    """A markdown row ``| name | bleu | tok_bleu |`` (with the header lines first if ``header``)."""
    lines = []
    if header:
        lines += ["| protocol | " + " | ".join(LABELS[f] for f in FLAVOURS) + " |",
                  "|---|" + "---:|" * len(FLAVOURS)]
    return lines + [f"| {name} | " + " | ".join(f"{scores[f]:.2f}" for f in FLAVOURS) + " |"]


def _lines(text: str) -> List[str]:
    """Lines split at ``\\n`` only, as sacrebleu and multi-bleu.perl read files (not at U+2028 etc.)."""
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """CLI entry point: hypotheses on stdin, one per line in reference order; returns {flavour: BLEU}."""
    parser = argparse.ArgumentParser(prog="python -m fairseq_xlm.cli.bleu", description=__doc__.split("\n")[0])
    parser.add_argument("ref", help="reference text, one detokenized sentence per line (<<unk>> never matches)")
    parser.add_argument("--lang", required=True, help="target language (Moses tokenizer and normalizer rules)")
    parser.add_argument("--name", default="", help="first column of the row (the decoding protocol)")
    parser.add_argument("--no-header", dest="header", action="store_false",
                        help="print the row alone (to append to a table); by default the header comes first")
    parser.add_argument("--header", dest="header", action="store_true", help="the default (kept for old scripts)")
    parser.add_argument("--score-only", choices=FLAVOURS, help="print only this flavour's number")
    args = parser.parse_args(argv)
    try:
        with open(args.ref, encoding="utf-8") as f:
            refs = _lines(f.read())
        hyps = _lines(sys.stdin.read())
        if not hyps:
            raise ValueError("no hypotheses on stdin")
        if len(hyps) != len(refs):
            raise ValueError(f"{len(hyps)} hypotheses on stdin but {len(refs)} reference lines in {args.ref}")
        scores = {f: s.score for f, s in BleuScorer(args.lang).score(hyps, refs).items()}
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}")
    if args.score_only:
        print(f"{scores[args.score_only]:.2f}")
    else:
        print("\n".join(table_lines(args.name, scores, args.header)))
    return scores


if __name__ == "__main__":
    setup_logging(logging.WARNING, sys.stderr)
    main(sys.argv[1:])
