"""Convert XLM checkpoints between the authors' release, HF ``transformers`` and fairseq_xlm.

    python -m fairseq_xlm.cli.convert xlm-to-fairseq mlm_enfr_1024.pth out/ [--langs en,fr]
    python -m fairseq_xlm.cli.convert hf-to-fairseq hf_dir/ out/
    python -m fairseq_xlm.cli.convert fairseq-to-hf checkpoints/checkpoint_best.pt hf_out/ [--dict DICT]
    python -m fairseq_xlm.cli.convert fairseq-to-xlm checkpoints/checkpoint_best.pt out.pth   (memory layers too)

The formats themselves (readers, writers, the neutral ``Released`` form) live in ``fairseq_xlm.formats``.
"""

import argparse
import os
import sys
from typing import Optional, Sequence

from .. import safe_load
from ..data import layout
from ..formats import read_authors, read_fairseq, read_hf, select_langs, write_authors, write_fairseq, write_hf


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m fairseq_xlm.cli.convert`` argument parser."""
    parser = argparse.ArgumentParser(prog="python -m fairseq_xlm.cli.convert", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("xlm-to-fairseq", help="the authors' released .pth -> OUT_DIR/checkpoint.pt + dict.txt")
    p.add_argument("src", metavar="SRC.pth", help="the authors' checkpoint (model, dico_*, params)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output directory (created atomically)")
    p = sub.add_parser("hf-to-fairseq", help="an HF XLMWithLMHeadModel directory -> OUT_DIR/checkpoint.pt + dict.txt")
    p.add_argument("src", metavar="HF_DIR", help="directory with config.json, weights and vocab.json")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output directory (created atomically)")
    for p in (sub.choices["xlm-to-fairseq"], sub.choices["hf-to-fairseq"]):
        p.add_argument("--langs", help="comma-separated languages to keep, in the new id order (default: all); "
                                       "required when the source does not name its languages")
    p = sub.add_parser("fairseq-to-hf", help="a fairseq_xlm xlm_transformer checkpoint -> an HF model directory")
    p.add_argument("src", metavar="CKPT", help="fairseq_xlm checkpoint (e.g. checkpoint_best.pt)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output directory (created atomically)")
    p.add_argument("--dict", help="the dict.txt the model was trained with (default: beside CKPT or in its data)")
    p.add_argument("--langs", help="the checkpoint's languages in id order (default: from its task config)")
    p.add_argument("--causal", action="store_true", help="mark the HF config causal (a CLM-trained model)")
    p = sub.add_parser("fairseq-to-xlm", help="a fairseq_xlm xlm_transformer checkpoint -> the authors' .pth "
                                             "(memory layers included)")
    p.add_argument("src", metavar="CKPT", help="fairseq_xlm checkpoint (e.g. checkpoint_best.pt)")
    p.add_argument("out_dir", metavar="OUT.pth", help="the authors' checkpoint to write")
    p.add_argument("--dict", help="the dict.txt the model was trained with (default: beside CKPT or in its data)")
    p.add_argument("--langs", help="the checkpoint's languages in id order (default: from its task config)")
    for p in sub.choices.values():
        p.add_argument("--force", action="store_true", help="overwrite files that already exist in OUT_DIR")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one conversion; bad input exits 1 with a one-line message."""
    args = build_parser().parse_args(argv)
    try:
        langs = layout.parse_langs(args.langs) if args.langs else None
        if args.command == "fairseq-to-hf":
            rel = read_fairseq(args.src, args.dict, langs)
            rel.causal = rel.causal or args.causal
            write_hf(rel, args.out_dir, args.force, source=args.src)
        elif args.command == "fairseq-to-xlm":
            write_authors(read_fairseq(args.src, args.dict, langs), args.out_dir, args.force, source=args.src)
        else:
            rel = read_authors(args.src) if args.command == "xlm-to-fairseq" else read_hf(args.src)
            write_fairseq(select_langs(rel, langs, args.src), args.out_dir, args.force, source=args.src)
    except (safe_load.CheckpointLoadError, ValueError, OSError) as err:
        print(f"fairseq_xlm.cli.convert: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print(f"wrote {os.path.abspath(args.out_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
