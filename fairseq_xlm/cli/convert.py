"""Convert XLM checkpoints between the authors' release, HF ``transformers`` and fairseq_xlm.

    python -m fairseq_xlm.cli.convert xlm-to-fairseq mlm_enfr_1024.pth out/ [--langs en,fr]
    python -m fairseq_xlm.cli.convert hf-to-fairseq hf_dir/ out/ [--labels DATA/xnli/labels.txt]
    python -m fairseq_xlm.cli.convert fairseq-to-hf checkpoints/checkpoint_best.pt hf_out/ [--dict DICT]
    python -m fairseq_xlm.cli.convert fairseq-to-xlm checkpoints/checkpoint_best.pt out.pth   (memory layers too)

A fine-tuned ``xnli`` / ``xlm_glue`` checkpoint converts to ``XLMForSequenceClassification`` (class names from
its data's labels.txt), and an HF sequence classifier to a checkpoint that ``evaluate_xnli`` /
``evaluate_glue`` score on a data-bin whose labels.txt names the same classes in the same order.

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
    p = sub.choices["hf-to-fairseq"]
    p.add_argument("--labels", help="a sequence classifier: the labels.txt of the data it will be evaluated on; "
                                    "config.json's id2label must name those classes in that order")
    p.add_argument("--cls-task", default="xnli", choices=("xnli", "xlm_glue"),
                   help="a sequence classifier: the task of the checkpoint (default xnli)")
    p.add_argument("--cls-subdir", default=None, help="a sequence classifier: the data's --cls-subdir "
                                                      "(default: the task's)")
    p.add_argument("--glue-task", default=None, help="with --cls-task xlm_glue: the GLUE task (e.g. MRPC)")
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


def classifier_task(rel, args) -> None:
    """The task and data of an imported HF sequence classifier; its class names checked against --labels."""
    if rel.head is None:
        if args.labels or args.glue_task or args.cls_subdir:
            raise ValueError(f"{args.src}: not a sequence classifier, but --labels/--glue-task/--cls-subdir given")
        return
    rel.cls_task = {"_name": args.cls_task}
    if args.cls_subdir:
        rel.cls_task["cls_subdir"] = args.cls_subdir
    if args.glue_task:
        rel.cls_task["glue_task"] = args.glue_task
    if args.labels:
        from ..data.classification_dataset import load_label_set

        names = load_label_set(args.labels)
        generic = [f"LABEL_{i}" for i in range(len(rel.labels or []))]
        if rel.labels != names and not (rel.labels == generic and len(names) == len(generic)):
            raise ValueError(f"{args.src}/config.json: id2label {rel.labels} is not {args.labels} "
                             f"{names} (the same classes in the same order)")
        rel.labels = names


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
            if args.command == "hf-to-fairseq":
                classifier_task(rel, args)
            write_fairseq(select_langs(rel, langs, args.src), args.out_dir, args.force, source=args.src)
    except (safe_load.CheckpointLoadError, ValueError, OSError) as err:
        print(f"fairseq_xlm.cli.convert: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print(f"wrote {os.path.abspath(args.out_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
