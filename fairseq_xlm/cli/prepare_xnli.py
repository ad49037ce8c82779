"""Classification data for task ``xnli``: raw text from XNLI/MultiNLI or Bible genres, then binarized.

    python -m fairseq_xlm.cli.prepare_xnli extract --out RAW --langs en,es \\
        --xnli-dir XNLI-1.0 [--mnli-train multinli_1.0_train.jsonl] [--translate-train-dir XNLI-MT-1.0/multinli]
    python -m fairseq_xlm.cli.prepare_xnli extract-bible --bible-raw BIBLE_RAW --out RAW --langs en,es,ny
    python -m fairseq_xlm.cli.prepare_xnli extract-glue --glue-dir glue_data/MRPC --task MRPC --out RAW
    python -m fairseq_xlm.cli.prepare_xnli binarize --raw RAW --data DATA [--subdir xnli]

``extract`` maps XNLI dev -> valid, test -> test (every language of --langs must be in them), MultiNLI train
-> train.en, and ``multinli.train.{lang}.tsv`` -> train.{lang} (translate-train). ``extract-bible`` renames
the output of ``python -m fairseq_xlm.cli.bible --labels`` ({split}.{lang} + .label) into the same raw layout:

    RAW/labels.txt                       class names, one a line (their order gives the class ids)
    RAW/{split}.{lang}.input0 [.input1]  one text a line (input1: the second text of a pair)
    RAW/{split}.{lang}.label             one label a line

``extract-glue`` reads a GLUE task's tsv files (``fairseq_xlm.data.glue``) into the same layout, in English
(``{split}.en``): dev -> valid, test -> test (unlabelled: no ``.label``; ``.index`` keeps GLUE's row ids for the
submission file), MNLI's mismatched sets -> valid_mm / test_mm; STS-B's scores are labels without labels.txt.

``binarize`` applies the pretraining data-bin's tokenization and dict.txt (as ``fairseq_xlm.cli.prepare`` does:
sentencepiece pieces, or the authors' Moses + BPE for a data-bin made with ``--bpe authors``, then fairseq's
dictionary with ``</s>`` appended) and writes DATA/SUBDIR in the layout
read by ``fairseq_xlm.tasks.xnli``. Every output is written under a temporary name and renamed.
"""

import argparse
import glob
import logging
import os
import re
import shutil
import sys
from typing import Dict, List, Optional, Sequence

from fairseq_xlm.cli import setup_logging
from fairseq_xlm.data import manifest
from fairseq_xlm.data.layout import load_dictionary, parse_langs
from fairseq_xlm.data.text_pieces import piece_encoder
from fairseq_xlm.atomic_lines import write_lines
from fairseq_xlm.data.xnli_readers import (
    NLI_LABELS,
    NliExample,
    by_language,
    read_multinli_jsonl,
    read_xnli_mt_tsv,
    read_xnli_tsv,
)

logger = logging.getLogger("fairseq_xlm.cli.prepare_xnli")

SPLITS = ("train", "valid", "test")
RAW_NAME = re.compile(r"^((?:train|valid|test)(?:_[a-z]+)?)\.([A-Za-z0-9_]+)\.input0$")


def write_examples(out: str, split: str, lang: str, examples: Sequence[NliExample]) -> None:
    """RAW/{split}.{lang}.input0/.input1/.label for sentence pairs."""
    prefix = os.path.join(out, f"{split}.{lang}")
    write_lines(prefix + ".input0", [ex.sentence1 for ex in examples])
    write_lines(prefix + ".input1", [ex.sentence2 for ex in examples])
    write_lines(prefix + ".label", [ex.label for ex in examples])
    logger.info("%s: %d examples", prefix, len(examples))


def extract_nli(out: str, langs: List[str], xnli_dir: str, mnli_train: Optional[str],
                translate_train_dir: Optional[str]) -> Dict[str, int]:
    """XNLI dev/test (+ MultiNLI train, + translate-train sets) -> raw layout; {file prefix: examples}."""
    os.makedirs(out, exist_ok=True)
    counts = {}
    for split, name in (("valid", "xnli.dev.tsv"), ("test", "xnli.test.tsv")):
        path = os.path.join(xnli_dir, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: missing (--xnli-dir should hold XNLI-1.0's {name})")
        examples, _ = read_xnli_tsv(path, langs)
        for lang, group in by_language(examples).items():
            write_examples(out, split, lang, group)
            counts[f"{split}.{lang}"] = len(group)
    if mnli_train:
        if "en" not in langs:
            raise ValueError(f"--mnli-train is English but 'en' is not in --langs {','.join(langs)}")
        examples, _ = read_multinli_jsonl(mnli_train, "en")
        write_examples(out, "train", "en", examples)
        counts["train.en"] = len(examples)
    if translate_train_dir:
        for lang in langs:
            if lang == "en" and mnli_train:
                continue
            path = os.path.join(translate_train_dir, f"multinli.train.{lang}.tsv")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path}: missing translate-train file for '{lang}' (--translate-train-dir)")
            examples, _ = read_xnli_mt_tsv(path, lang)
            write_examples(out, "train", lang, examples)
            counts[f"train.{lang}"] = len(examples)
    write_lines(os.path.join(out, "labels.txt"), list(NLI_LABELS))
    return counts


def extract_bible(out: str, langs: List[str], bible_raw: str) -> Dict[str, int]:
    """``fairseq_xlm.cli.bible --labels`` output ({split}.{lang}, .label) -> raw layout with input0 only."""
    from fairseq_xlm.cli.bible import GENRES

    os.makedirs(out, exist_ok=True)
    counts = {}
    for lang in langs:
        for split in SPLITS:
            text, label = (os.path.join(bible_raw, f"{split}.{lang}{ext}") for ext in ("", ".label"))
            if not os.path.isfile(text):
                continue
            if not os.path.isfile(label):
                raise FileNotFoundError(f"{label}: missing; run python -m fairseq_xlm.cli.bible with --labels")
            for src, ext in ((text, ".input0"), (label, ".label")):
                dst = os.path.join(out, f"{split}.{lang}{ext}")
                shutil.copyfile(src, dst + ".tmp")
                os.replace(dst + ".tmp", dst)
            with open(text, encoding="utf-8") as f:
                counts[f"{split}.{lang}"] = sum(1 for _ in f)
        if f"test.{lang}" not in counts and f"valid.{lang}" not in counts and f"train.{lang}" not in counts:
            raise FileNotFoundError(f"{bible_raw}: no {{train,valid,test}}.{lang} (is '{lang}' in the bible --langs?)")
    write_lines(os.path.join(out, "labels.txt"), [name for _, _, name in GENRES])
    return counts


def extract_glue(out: str, glue_dir: str, task: str) -> Dict[str, int]:
    """GLUE's tsv files of ``task`` -> raw layout (English); {file prefix: examples}."""
    from fairseq_xlm.data.glue import glue_files, glue_spec, read_glue_tsv

    spec = glue_spec(task)
    os.makedirs(out, exist_ok=True)
    counts = {}
    for split, path in glue_files(glue_dir, task).items():
        data = read_glue_tsv(path, task)
        prefix = os.path.join(out, f"{split}.en")
        write_lines(prefix + ".input0", data.first)
        if data.second is not None:
            write_lines(prefix + ".input1", data.second)
        if data.labels is not None:
            write_lines(prefix + ".label", data.labels)
        elif not split.startswith("test"):
            raise ValueError(f"{path}: no '{spec.label}' column; only test sets may be unlabelled")
        write_lines(prefix + ".index", data.index)
        counts[f"{split}.en"] = len(data.first)
        logger.info("%s: %d examples from %s", prefix, len(data.first), path)
    if spec.classes is not None:
        write_lines(os.path.join(out, "labels.txt"), list(spec.classes))
    return counts


def _binarize_text(src: str, dst_prefix: str, encoder, lang: str, dictionary) -> int:
    """One text file of ``lang`` -> DST.bin/.idx (the data-bin's pieces, then dictionary ids + </s>)."""
    from fairseq.data import indexed_dataset

    tmp = f"{dst_prefix}.tmp{os.getpid()}"
    builder = indexed_dataset.make_builder(tmp + ".bin", impl="mmap", vocab_size=len(dictionary))
    n = unk = tokens = 0
    with open(src, encoding="utf-8", newline="\n") as f:
        for line in f:
            pieces = encoder.batch([line.rstrip("\n").rstrip("\r")], lang)[0]
            ids = dictionary.encode_line(" ".join(pieces), add_if_not_exist=False, append_eos=True)
            builder.add_item(ids)
            n += 1
            tokens += len(ids)
            unk += int(ids.eq(dictionary.unk()).sum())
    builder.finalize(tmp + ".idx")
    for ext in ("bin", "idx"):
        os.replace(f"{tmp}.{ext}", f"{dst_prefix}.{ext}")
    if tokens and unk / tokens > 0.05:
        logger.warning("%s: %.1f%% <unk> tokens: is this language covered by the pretraining BPE/dictionary?",
                       src, 100.0 * unk / tokens)
    return n


def binarize(raw: str, data: str, subdir: str = "xnli") -> Dict[str, int]:
    """RAW (raw layout) -> DATA/SUBDIR (task layout), with DATA's tokenization (spm.model or the authors'
    BPE in authors_bpe/) and dict.txt."""
    from fairseq_xlm.data.classification_dataset import load_label_set, read_labels, read_scores

    encoder = piece_encoder(data)
    dictionary = load_dictionary(data)
    # no labels.txt: the labels are scores (GLUE's STS-B regression)
    labels = load_label_set(os.path.join(raw, "labels.txt")) if os.path.isfile(os.path.join(raw, "labels.txt")) \
        else None
    label_ids = {name: i for i, name in enumerate(labels or [])}
    prefixes = sorted(m.group(0)[: -len(".input0")] for m in
                      (RAW_NAME.match(os.path.basename(p)) for p in glob.glob(os.path.join(raw, "*.input0"))) if m)
    if not prefixes:
        raise FileNotFoundError(f"{raw}: no {{train,valid,test}}.{{lang}}.input0 files (run extract first)")
    out_dir = os.path.join(data, subdir)
    os.makedirs(out_dir, exist_ok=True)
    counts = {}
    for prefix in prefixes:
        src = os.path.join(raw, prefix)
        lang = prefix.split(".")[1]
        n = _binarize_text(src + ".input0", os.path.join(out_dir, prefix + ".input0"), encoder, lang, dictionary)
        if os.path.isfile(src + ".input1"):
            n1 = _binarize_text(src + ".input1", os.path.join(out_dir, prefix + ".input1"), encoder, lang, dictionary)
            if n1 != n:
                raise ValueError(f"{src}.input1: {n1} lines but input0 has {n}; pairs must be line-aligned")
        if os.path.isfile(src + ".label"):  # unknown labels / wrong counts: error before copying
            read_scores(src + ".label", n) if labels is None else read_labels(src + ".label", label_ids, n)
        elif not prefix.startswith("test"):
            raise FileNotFoundError(f"{src}.label: missing (only test sets may be unlabelled)")
        for ext in (".label", ".index"):
            if os.path.isfile(src + ext):
                dst = os.path.join(out_dir, prefix + ext)
                shutil.copyfile(src + ext, dst + ".tmp")
                os.replace(dst + ".tmp", dst)
        counts[prefix] = n
        logger.info("%s: %d examples", os.path.join(out_dir, prefix), n)
    if labels is not None:
        write_lines(os.path.join(out_dir, "labels.txt"), labels)
    manifest.write(out_dir, os.path.join(data, "dict.txt"), sorted({p.split(".")[1] for p in prefixes}))
    return counts


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fairseq_xlm.cli.prepare_xnli", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("extract", help="XNLI 1.0 dev/test (+ MultiNLI train, + XNLI-MT) -> raw layout")
    p.add_argument("--out", required=True, help="raw output folder")
    p.add_argument("--langs", required=True, help="languages to keep, e.g. en,es (all must be in XNLI)")
    p.add_argument("--xnli-dir", required=True, help="folder with xnli.dev.tsv and xnli.test.tsv")
    p.add_argument("--mnli-train", default=None, help="multinli_1.0_train.jsonl (English training set)")
    p.add_argument("--translate-train-dir", default=None,
                   help="folder with multinli.train.{lang}.tsv (XNLI-MT-1.0/multinli), for --translate-train")
    p = sub.add_parser("extract-bible", help="fairseq_xlm.cli.bible --labels output -> raw layout (genres)")
    p.add_argument("--bible-raw", required=True, help="output folder of python -m fairseq_xlm.cli.bible --labels")
    p.add_argument("--out", required=True, help="raw output folder")
    p.add_argument("--langs", required=True, help="languages to take, e.g. en,es,ny")
    p = sub.add_parser("extract-glue", help="a GLUE task's tsv files -> raw layout (English)")
    p.add_argument("--glue-dir", required=True, help="the task's GLUE folder (train.tsv, dev*.tsv, test*.tsv)")
    p.add_argument("--task", required=True, help="CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE or WNLI")
    p.add_argument("--out", required=True, help="raw output folder")
    p = sub.add_parser("binarize", help="raw layout -> DATA/SUBDIR with DATA's tokenization and dict.txt")
    p.add_argument("--raw", required=True, help="raw folder made by extract / extract-bible")
    p.add_argument("--data", required=True, help="the pretraining data-bin (dict.txt and spm.model or authors_bpe/)")
    p.add_argument("--subdir", default="xnli", help="output folder under DATA (the task's --cls-subdir)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, int]:
    """CLI entry point; returns {file prefix: examples}; bad input exits with one clear message."""
    args = get_parser().parse_args(argv)
    try:
        if args.command == "extract":
            return extract_nli(args.out, parse_langs(args.langs), args.xnli_dir, args.mnli_train,
                               args.translate_train_dir)
        if args.command == "extract-glue":
            return extract_glue(args.out, args.glue_dir, args.task)
        if args.command == "extract-bible":
            return extract_bible(args.out, parse_langs(args.langs), args.bible_raw)
        return binarize(args.raw, args.data, args.subdir)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}")


if __name__ == "__main__":
    setup_logging()
    main(sys.argv[1:])
