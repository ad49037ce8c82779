"""The paper's cross-lingual word embedding table for checkpoints (``fairseq_xlm.word_embeddings``): one row
per arm, mean ± std over its checkpoints (seeds).

    python -m fairseq_xlm.cli.evaluate_word_embeddings DATA random=r1.pt random=r2.pt mlm=m1.pt ... \\
        (--muse en-es.txt | --freedict /usr/share/dictd/freedict-eng-spa.index) [--semeval DATA.txt GOLD.txt] \\
        [--out table.md]

DATA is the data-bin of the checkpoints (dict.txt, spm.model). ``--freedict`` takes the ``.index`` of a dictd
dictionary (Debian's ``dict-freedict-eng-spa``); its ``.dict.dz`` lies beside it.
"""

import argparse
import os
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

from fairseq_xlm.cli import setup_logging

EMBEDDINGS = "encoder.embeddings.embed_tokens.weight"


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, List]:
    """CLI entry point; returns {arm: [WordScores per checkpoint]}."""
    parser = argparse.ArgumentParser(prog="python -m fairseq_xlm.cli.evaluate_word_embeddings",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("data", help="the checkpoints' data-bin (dict.txt, spm.model)")
    parser.add_argument("runs", nargs="+", metavar="ARM=CKPT", help="a checkpoint and its arm's name")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--muse", help="a MUSE-format dictionary (source target, one pair a line)")
    source.add_argument("--freedict", help="a dictd .index (FreeDict); the .dict.dz beside it is read too")
    parser.add_argument("--semeval", nargs=2, metavar=("DATA", "GOLD"),
                        help="SemEval'17 task 2 cross-lingual pairs and their gold scores")
    parser.add_argument("--out", help="markdown file to write the table to")
    args = parser.parse_args(argv)
    import sentencepiece as spm

    from fairseq_xlm import safe_load
    from fairseq_xlm.data import layout
    from fairseq_xlm.word_embeddings import (evaluate_table, mean_std, read_freedict, read_muse_dictionary,
                                             read_semeval)

    try:
        if args.freedict:
            dz = args.freedict[: -len(".index")] + ".dict.dz" if args.freedict.endswith(".index") else ""
            if not os.path.isfile(dz):
                raise FileNotFoundError(f"--freedict {args.freedict}: no {dz or '.dict.dz'} beside it")
            pairs = read_freedict(args.freedict, dz)
        else:
            pairs = read_muse_dictionary(args.muse)
        semeval = read_semeval(*args.semeval) if args.semeval else None
        dictionary = layout.load_dictionary(args.data)
        sp = spm.SentencePieceProcessor(model_file=os.path.join(args.data, "spm.model"))
        results = OrderedDict()
        for run in args.runs:
            arm, sep, ckpt = run.partition("=")
            if not sep or not arm or not ckpt:
                raise ValueError(f"{run!r}: give ARM=CHECKPOINT, e.g. mlm=runs/mlm/s1/checkpoint_last.pt")
            safe_load.check_checkpoint_file(ckpt)
            table = safe_load.load_checkpoint(ckpt)["model"].get(EMBEDDINGS)
            if table is None or table.size(0) != len(dictionary):
                raise ValueError(f"{ckpt}: no {EMBEDDINGS} of {len(dictionary)} rows (the data-bin's vocabulary)")
            results.setdefault(arm, []).append(evaluate_table(table, sp, dictionary, pairs, semeval))
    except (ValueError, OSError, safe_load.CheckpointLoadError) as err:
        raise SystemExit(f"error: {err}")
    lines = ["| model | seeds | pairs | cosine ↑ | L2 ↓ | cosine, shuffled pairs | pairs sharing no piece | "
             "their cosine ↑ | SemEval'17 Pearson ↑ |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for arm, scores in results.items():
        pearson = mean_std([s.pearson for s in scores]) if scores[0].pearson is not None else "-"
        lines.append(f"| {arm} | {len(scores)} | {scores[0].pairs} | {mean_std([s.cosine for s in scores])} | "
                     f"{mean_std([s.l2 for s in scores])} | {mean_std([s.shuffled_cosine for s in scores])} | "
                     f"{scores[0].disjoint_pairs} | {mean_std([s.disjoint_cosine for s in scores])} | {pearson} |")
    print("\n".join(lines))
    if args.out:
        with open(args.out + ".tmp", "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(args.out + ".tmp", args.out)
    return results


if __name__ == "__main__":
    setup_logging()
    main(sys.argv[1:])
