"""Cross-lingual retrieval P@1 of a checkpoint's encoder on a parallel split (``fairseq_xlm.retrieval``), as one
markdown row (or JSON).

    python -m fairseq_xlm.cli.evaluate_retrieval --checkpoint CKPT --data DATA_BIN --src en --tgt es \\
        [--split test] [--layer -1] [--max-sentences N] [--name ROW] [--header] [--json]
"""

import argparse
import json
import logging
import sys
from typing import List, Optional, Sequence

from ..retrieval import evaluate_retrieval
from ..safe_load import CheckpointLoadError
from . import setup_logging


def table_lines(name: str, result: dict, layer: int, header: bool = False) -> List[str]:
    """``| name | layer | pairs | src→tgt P@1 % | tgt→src P@1 % |`` (with the header lines first if ``header``)."""
    src, tgt = result["src"], result["tgt"]
    lines = []
    if header:
        lines += [f"| model | layer | pairs | {src}→{tgt} P@1 (%) | {tgt}→{src} P@1 (%) |",
                  "|---|---:|---:|---:|---:|"]
    return lines + [f"| {name} | {layer} | {result['n']} | {100 * result['p_at_1_src_tgt']:.1f} | "
                    f"{100 * result['p_at_1_tgt_src']:.1f} |"]


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """CLI entry point; returns the result dict of ``evaluate_retrieval``. Bad input exits 1 with one line."""
    parser = argparse.ArgumentParser(prog="python -m fairseq_xlm.cli.evaluate_retrieval",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="an xlm_transformer or xlm_mt checkpoint")
    parser.add_argument("--data", required=True, help="the data-bin with {split}.{src}-{tgt}.{src,tgt}.bin/idx")
    parser.add_argument("--src", required=True, help="source language (one of the checkpoint's --langs)")
    parser.add_argument("--tgt", required=True, help="target language")
    parser.add_argument("--split", default="test", help="parallel split to retrieve from (default: test)")
    parser.add_argument("--layer", type=int, default=-1, help="layer whose states are mean-pooled: 0 = "
                                                                "embeddings, 1..L, -1 = last (default)")
    parser.add_argument("--max-sentences", type=int, default=0, help="the first N pairs only (0 = all)")
    parser.add_argument("--name", default=None, help="first column of the row (default: the checkpoint path)")
    parser.add_argument("--header", action="store_true", help="print the table header before the row")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a row")
    args = parser.parse_args(argv)
    try:
        result = evaluate_retrieval(args.checkpoint, args.data, args.src, args.tgt, args.split, args.layer,
                                    args.max_sentences)
    except (CheckpointLoadError, ValueError, OSError) as err:
        print(f"fairseq_xlm.cli.evaluate_retrieval: error: {' '.join(str(err).split())}", file=sys.stderr)
        raise SystemExit(1)
    if args.json:
        print(json.dumps({**result, "split": args.split, "layer": args.layer}))
    else:
        print("\n".join(table_lines(args.name or args.checkpoint, result, args.layer, args.header)))
    return result


if __name__ == "__main__":
    setup_logging(logging.WARNING, sys.stderr)
    main()
