"""The inputs of ``recipes/evaluate_mt.sh``, checked and prepared before fairseq-generate runs:

    python -m fairseq_xlm.cli.mt_inputs check-checkpoint CKPT [--reference DATABIN SPLIT SRC TGT --out FILE]
        exit 1 with one line when CKPT is a pretraining (encoder-only) checkpoint, which cannot translate;
        with --reference, then write the reference text to FILE (whole or not at all), in the same process:
        each Python process of evaluate_mt.sh costs a start-up (about 6.5 s of CPU on a slow 2-core machine)
    python -m fairseq_xlm.cli.mt_inputs reference DATABIN SPLIT SRC TGT
        the detokenized reference text of SPLIT's SRC-TGT pairs (TGT side) from the data-bin, to stdout
"""

import argparse
import sys
from typing import Iterator, List, Optional


def check_checkpoint(path: str) -> None:
    """SystemExit with an ``error:`` line when ``path`` holds an encoder-only (pretraining) model."""
    import torch

    import fairseq_xlm  # noqa: F401  (the allow-list of fairseq checkpoint types)
    from fairseq_xlm.models.xlm_transformer import ENCODER_ARCHS

    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception:  # legacy (non-zip) files cannot be memory-mapped
        from fairseq_xlm.safe_load import load_checkpoint

        state = load_checkpoint(path)
    model = (state.get("cfg") or {}).get("model") or {}
    name = model.get("_name") if hasattr(model, "get") else getattr(model, "_name", None)
    if name == "xlm_transformer" or name in ENCODER_ARCHS:  # cfg.model._name is the architecture
        sys.exit(f"error: {path} is a pretraining checkpoint ({name}, no decoder); MT needs an xlm_mt "
                 f"checkpoint from recipes/umt.sh or recipes/supervised_mt.sh")


def reference_lines(data_dir: str, split: str, src: str, tgt: str) -> Iterator[str]:
    """The detokenized TGT side of SPLIT's SRC-TGT pairs, one line per pair."""
    import sentencepiece
    from fairseq.data import data_utils

    from fairseq_xlm.bleu import decode_reference
    from fairseq_xlm.data import layout

    prefix = layout.para_prefix(data_dir, split, src, tgt, tgt)
    if prefix is None:
        sys.exit(f"error: no {split}.{src}-{tgt}.{tgt} in {data_dir}: give the reference text with REF=FILE")
    dictionary = layout.load_dictionary(data_dir)
    spm = sentencepiece.SentencePieceProcessor(model_file=f"{data_dir}/spm.model")
    for tokens in data_utils.load_indexed_dataset(prefix, dictionary):
        yield decode_reference(dictionary.string(tokens, unk_string="<unk>").split(), spm.decode_pieces)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fairseq_xlm.cli.mt_inputs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-checkpoint")
    check.add_argument("checkpoint")
    check.add_argument("--reference", nargs=4, metavar=("DATABIN", "SPLIT", "SRC", "TGT"),
                       help="then write the reference text of these pairs to --out")
    check.add_argument("--out", help="the reference file (with --reference)")
    ref = sub.add_parser("reference")
    for name in ("data", "split", "src", "tgt"):
        ref.add_argument(name)
    args = parser.parse_args(argv)
    if args.command == "check-checkpoint":
        if (args.reference is None) != (args.out is None):
            parser.error("--reference and --out go together")
        check_checkpoint(args.checkpoint)
        if args.reference:
            from fairseq_xlm.atomic_lines import write_lines

            write_lines(args.out, reference_lines(*args.reference))
    else:
        for line in reference_lines(args.data, args.split, args.src, args.tgt):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
