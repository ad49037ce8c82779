"""Add one or more languages to a pretrained XLM: vocabulary, embeddings, language embedding, data-bin.

    python -m fairseq_xlm.cli.add_language CKPT --data-bin OLD --raw NEWTEXT --langs ny --destdir NEW \\
        [--vocab-size 2000] [--init mean|random] [--lang-init mean|random|LANG]

CKPT is a fairseq_xlm checkpoint (ours, or a release converted by ``convert``); OLD the data-bin it was
trained on (dict.txt, spm.model or the authors' BPE in authors_bpe/, its binarized text); NEWTEXT holds
``{train,valid[,test]}.{lang}`` of every new language (optionally ``{split}.{l1}-{l2}.{l1|l2}`` pairs with an
old or new language, for TLM).
NEW receives:

    spm.model, spm.vocab   OLD's model plus the pieces of a BPE learned on the new text (``data/spm_extend``):
                           old pieces keep their ids, and every sentence of OLD segments as before
    authors_bpe/           (an authors' BPE data-bin instead) OLD's codes plus merges learned on the new text,
                           its vocabulary plus the new words (``add_language_authors``, ``data/bpe_extend``)
    dict.txt               OLD's lines, ``<mask>`` at its old id, then the new pieces (by count)
    {split}.*.bin/.idx     OLD's files (unchanged ids) and the new languages' text binarized with the above
    checkpoint.pt          CKPT with rows for the new pieces (embeddings and tied output bias, --init) and
                           language-embedding rows for the new languages (--lang-init); --langs grown
    add_language.json      what was added; ``xlm_pretrain --freeze-old-embeddings N`` reads ``old_vocab``
    manifest.json          as ``prepare`` writes it

Continue pretraining with ``fairseq-train NEW --task xlm_pretrain --langs OLD,NEW ... --restore-file
NEW/checkpoint.pt --reset-optimizer --reset-dataloader --reset-meters --reset-lr-scheduler``.
"""

import argparse
import glob
import logging
import os
import shutil
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

import torch

from fairseq_xlm import safe_load
from fairseq_xlm.cli import add_language_authors, prepare_ids, setup_logging
from fairseq_xlm.cli.prepare_stages import RESERVED, PrepareConfig, atomic_path, write_json
from fairseq_xlm.data import layout, manifest, spm_extend
from fairseq_xlm.errors import DataBinError
from fairseq_xlm.formats import read_fairseq, write_fairseq
from fairseq_xlm.formats.readers import _cfg_get
from fairseq_xlm.formats.released import DICT, N_SPECIALS, SPM, Released

logger = logging.getLogger("fairseq_xlm.cli.add_language")

RECORD = "add_language.json"
SPLITS = ("train", "valid", "test")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m fairseq_xlm.cli.add_language`` argument parser."""
    p = argparse.ArgumentParser(prog="python -m fairseq_xlm.cli.add_language", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", metavar="CKPT", help="fairseq_xlm checkpoint (trained or converted)")
    p.add_argument("--data-bin", required=True, help="the data-bin CKPT was trained on (sentencepiece, or the "
                   "authors' BPE: prepare --bpe authors)")
    p.add_argument("--raw", required=True, help="folder with {train,valid[,test]}.{lang} of the new languages")
    p.add_argument("--langs", required=True, help="comma-separated new language codes, e.g. ny")
    p.add_argument("--destdir", required=True, help="the new data-bin (and checkpoint.pt) folder")
    p.add_argument("--vocab-size", type=int, default=2000, help="pieces of the BPE learned on the new text (its "
                   "pieces the old model lacks are appended; the authors' BPE: merges learned, fastBPE's learnbpe "
                   "N); 0 = none: the new languages through the old BPE (a baseline; only a language-embedding "
                   "row is added)")
    p.add_argument("--pretokenized", action="store_true", help="the authors' BPE: the new text is already in "
                   "the data-bin's form (Moses-tokenized, lowercased if it is): only the codes are applied")
    p.add_argument("--character-coverage", type=float, default=1.0, help="of that BPE (as prepare's)")
    p.add_argument("--sample-lines", type=int, default=1_000_000, help="new-text lines the BPE is learned on")
    p.add_argument("--init", choices=("mean", "random"), default="mean", help="new token rows: mean = mean of "
                   "the embeddings (and output biases) of the old pieces the old BPE splits the piece into; "
                   "random = the model's own init (normal, std dim^-0.5; bias 0)")
    p.add_argument("--lang-init", default="mean", help="new language-embedding rows: mean (of the old "
                   "languages' rows), random (normal, std dim^-0.5) or an old language code to copy")
    p.add_argument("--seed", type=int, default=1, help="seed of the BPE sample and of random inits")
    p.add_argument("--force", action="store_true", help="write into a non-empty --destdir")
    return p


# ---------------------------------------------------------------- checks


def check_bpe(rel: Released, sp_proto, old: str, ckpt: str) -> None:
    """OLD's spm.model and dict.txt must be the vocabulary of CKPT: every piece a word and every word a piece."""
    pieces = {p.piece for p in sp_proto.pieces if p.type == spm_extend.NORMAL}
    words = set(rel.words[N_SPECIALS:]) - {layout.MASK}
    usable = {p for p in pieces if p not in RESERVED and p.split() == [p]}
    extra, missing = sorted(words - pieces), sorted(usable - words)
    if extra or missing:
        raise DataBinError(
            f"{os.path.join(old, SPM)} does not match the dictionary of {ckpt} ({os.path.join(old, DICT)}): "
            f"{len(extra)} words are not pieces (first {extra[:3]}), {len(missing)} pieces are not words "
            f"(first {missing[:3]}); give the data-bin the checkpoint was trained on")


def check_recorded_dict(ckpt: str, old: str) -> None:
    """The data-bin a checkpoint names (cfg.task.data) must hold the same dict.txt as --data-bin, when it exists
    (a dictionary of the same size but other words would pass every shape check)."""
    recorded = _cfg_get(_cfg_get(safe_load.load_checkpoint(ckpt).get("cfg"), "task"), "data")
    theirs = os.path.join(recorded or "", DICT)
    if not recorded or not os.path.isfile(theirs) or os.path.samefile(theirs, os.path.join(old, DICT)):
        return
    with open(theirs, "rb") as a, open(os.path.join(old, DICT), "rb") as b:
        if a.read() != b.read():
            raise DataBinError(f"{os.path.join(old, DICT)} differs from {theirs}, the dictionary of the data-bin "
                               f"{ckpt} was trained on: give that data-bin as --data-bin")


def new_corpora(raw: str, new: List[str], every: List[str]) -> Dict[str, List[str]]:
    """``prepare``'s inventory of the new text: mono splits of the new languages, pairs with one new side."""
    if not os.path.isdir(raw):
        raise ValueError(f"--raw {raw}: no such folder")
    corpora = {}
    for lang in new:
        for split in SPLITS:
            if os.path.isfile(os.path.join(raw, f"{split}.{lang}")):
                corpora[f"{split}.{lang}"] = [f"{split}.{lang}"]
            elif split != "test":
                raise ValueError(f"{os.path.join(raw, f'{split}.{lang}')}: missing; every new language needs "
                                 f"train and valid text")
    for split in SPLITS:
        for a in every:
            for b in every:
                sides = [f"{split}.{a}-{b}.{x}" for x in (a, b)]
                if a != b and (a in new or b in new) and all(os.path.isfile(os.path.join(raw, s)) for s in sides):
                    corpora[f"{split}.{a}-{b}"] = sides
    return corpora


def old_concatenations(old: str, symbols: List[str], eos: int) -> set:
    """Strings of adjacent piece pairs in every binarized file of OLD (see ``spm_extend``)."""
    found = set()
    for path in sorted(glob.glob(os.path.join(old, "*.bin"))):
        tokens, _ = prepare_ids.read_tokens(path[: -len(".bin")])
        found |= spm_extend.adjacent_concatenations(tokens, eos, symbols)
    return found


def learn_pieces(args, trains: List[str], old_proto, old: str, work: str):
    """(pieces to append, pieces of the learned BPE the old one lacks): a BPE learned on the new text, less
    the pieces that would re-segment OLD's text (``spm_extend``)."""
    learned = spm_extend.train_pieces(trains, args.vocab_size, args.character_coverage, args.sample_lines,
                                      args.seed, work)
    unseen = spm_extend.unseen_pieces(old_proto, learned, RESERVED)
    fairseq_symbols = list(layout.load_dictionary(old).symbols)
    pairs = old_concatenations(old, fairseq_symbols, fairseq_symbols.index("</s>"))
    pieces = spm_extend.drop_conflicts(unseen, pairs, {p.piece for p in old_proto.pieces})
    if not pieces:
        raise ValueError(f"--raw {', '.join(trains)}: yields no new pieces (a {args.vocab_size}-piece BPE "
                         f"learned on it has {len(unseen)} pieces {os.path.join(old, SPM)} lacks, "
                         f"{len(unseen) - len(pieces)} of them would re-segment the old data)")
    logger.info(f"{len(pieces)} new pieces ({len(unseen)} unseen by the old BPE, "
                f"{len(unseen) - len(pieces)} left out: they would re-segment {old}'s text)")
    return pieces, unseen


def grow_spm(args, old: str, dest: str, trains: List[str], work: str, old_proto):
    """The sentencepiece path: learn and filter pieces, write DEST's spm.model / spm.vocab. Returns (new pieces
    in dict.txt's order, their counts, the old split of pieces for ``--init mean``, what to record)."""
    if args.vocab_size > 0:
        pieces, unseen = learn_pieces(args, trains, old_proto, old, work)
    else:  # the baseline without extension: the new languages through the old BPE
        pieces, unseen = [], []
    extended = spm_extend.extend(old_proto, pieces)
    counts = spm_extend.piece_counts(spm_extend.processor(extended), trains)
    pieces = sorted(pieces, key=lambda p: -counts.get(p, 0))  # dict.txt's order: by count, as prepare's
    with atomic_path(os.path.join(dest, SPM)) as tmp, open(tmp, "wb") as f:
        f.write(extended.SerializeToString())
    with atomic_path(os.path.join(dest, "spm.vocab")) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.writelines(f"{p.piece}\t{p.score:g}\n" for p in extended.pieces)
    splitter = spm_extend.splitter(old_proto)

    def split(new_pieces: List[str]) -> List[List[str]]:
        return splitter.encode([p.replace("▁", " ") for p in new_pieces], out_type=str)

    return pieces, counts, split, {"unseen_pieces": len(unseen)}


# ---------------------------------------------------------------- the model


def new_rows(rel: Released, pieces: List[str], split, init: str, gen: torch.Generator):
    """(embedding rows, output-bias entries) of the new pieces by ``--init``; ``split(pieces)`` gives the old
    tokens the old BPE splits each piece's surface into."""
    emb, bias = rel.state["embeddings.weight"], rel.state["pred_layer.proj.bias"]
    if not pieces:
        return emb[:0], bias[:0]
    if init == "random":
        rows = torch.randn(len(pieces), emb.size(1), generator=gen, dtype=torch.float32) * emb.size(1) ** -0.5
        return rows.to(emb.dtype), torch.zeros(len(pieces), dtype=bias.dtype)
    index = {w: i for i, w in enumerate(rel.words)}
    unk = rel.words.index("<unk>")
    parts = [[index.get(s, unk) for s in seg] or [unk] for seg in split(pieces)]
    rows = torch.stack([emb[torch.tensor(p)].float().mean(0) for p in parts]).to(emb.dtype)
    biases = torch.stack([bias[torch.tensor(p)].float().mean() for p in parts]).to(bias.dtype)
    return rows, biases


def lang_rows(rel: Released, new: List[str], init: str, gen: torch.Generator) -> Optional[torch.Tensor]:
    """The language-embedding table with rows for ``new`` (``--lang-init``); a one-language model, whose
    table is absent (its language adds nothing), gets zero rows for the old language."""
    table = rel.state.get("lang_embeddings.weight")
    dim = rel.state["embeddings.weight"].size(1)
    if table is None:
        table = torch.zeros(len(rel.langs), dim, dtype=rel.state["embeddings.weight"].dtype)
    if init == "mean":
        add = table.float().mean(0, keepdim=True).expand(len(new), dim)
    elif init == "random":
        add = torch.randn(len(new), dim, generator=gen) * dim ** -0.5
    elif init in rel.langs:
        add = table[rel.langs.index(init)].float().unsqueeze(0).expand(len(new), dim)
    else:
        raise ValueError(f"--lang-init {init}: choose mean, random or a language of the checkpoint "
                         f"({','.join(rel.langs)})")
    return torch.cat([table, add.to(table.dtype)])


# ---------------------------------------------------------------- driver


def run(args) -> dict:
    """Every output of the module doc; returns the record written to add_language.json."""
    old, dest, raw = args.data_bin, args.destdir, args.raw
    new = layout.parse_langs(args.langs)
    if args.vocab_size < 0:
        raise ValueError(f"--vocab-size {args.vocab_size}: must be >= 0 (0: no new pieces)")
    if os.pathsep in old:
        raise ValueError(f"--data-bin {old}: a sharded data path; give one shard folder")
    authors = add_language_authors.is_authors(old)
    if not authors and not os.path.isfile(os.path.join(old, SPM)):
        raise DataBinError(f"{os.path.join(old, SPM)}: missing (and no {add_language_authors.FOLDER}/); --data-bin "
                           f"must be a data-bin made by prepare")
    if args.pretokenized and not authors:
        raise ValueError(f"--pretokenized: only with a data-bin of the authors' BPE ({old} has spm.model)")
    if os.path.isdir(dest) and os.listdir(dest) and not args.force:
        raise ValueError(f"--destdir {dest}: not empty; choose a new folder or pass --force")
    rel = read_fairseq(args.checkpoint, os.path.join(old, DICT))
    check_recorded_dict(args.checkpoint, old)
    if not rel.langs:
        raise ValueError(f"{args.checkpoint}: its cfg.task names no languages")
    taken = [lang for lang in new if lang in rel.langs]
    if taken:
        raise ValueError(f"--langs {args.langs}: {taken} already a language of {args.checkpoint} "
                         f"({','.join(rel.langs)})")
    if args.lang_init not in ("mean", "random") and args.lang_init not in rel.langs:
        raise ValueError(f"--lang-init {args.lang_init}: choose mean, random or a language of the checkpoint "
                         f"({','.join(rel.langs)})")
    if authors:
        old_codes, old_vocab = add_language_authors.read_old(old)
        add_language_authors.check_bpe(rel, old_codes, old_vocab, old, args.checkpoint)
    else:
        old_proto = spm_extend.load_proto(os.path.join(old, SPM))
        check_bpe(rel, old_proto, old, args.checkpoint)
    every = rel.langs + new
    corpora = new_corpora(raw, new, every)
    trains = [os.path.join(raw, f"train.{lang}") for lang in new]

    os.makedirs(dest, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".add_language-", dir=dest)
    try:
        if authors:
            pieces, counts, split, bpe_record = add_language_authors.grow(args, old, dest, trains, work, rel,
                                                                          old_codes, old_vocab)
        else:
            pieces, counts, split, bpe_record = grow_spm(args, old, dest, trains, work, old_proto)

        # vocabulary and data-bin
        with open(os.path.join(old, DICT), encoding="utf-8") as f:
            old_lines = f.readlines()
        has_mask = any(line.split(" ")[0] == layout.MASK for line in old_lines)
        # <mask> keeps its id (without the line, tasks append it after the new pieces)
        mask = [] if has_mask or not pieces else [f"{layout.MASK} 0\n"]
        with atomic_path(os.path.join(dest, DICT)) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.writelines(old_lines + mask + [f"{p} {counts.get(p, 0)}\n" for p in pieces])
        for path in glob.glob(os.path.join(old, "*.*")):
            name = os.path.basename(path)
            if name.endswith((".bin", ".idx", ".label")) and name.split(".")[1] not in new:
                shutil.copyfile(path, os.path.join(dest, name))
        if authors:
            add_language_authors.binarize(args, raw, dest, new, corpora, work)
        else:
            cfg = PrepareConfig(raw=raw, destdir=dest, langs=",".join(new), seed=args.seed)
            prepare_ids.encode(cfg, corpora, work)
            prepare_ids.binarize(cfg, corpora, work)

        # the checkpoint
        gen = torch.Generator().manual_seed(args.seed)
        old_rows = len(rel.words)
        rows, biases = new_rows(rel, pieces, split, args.init, gen)
        rel.state["embeddings.weight"] = torch.cat([rel.state["embeddings.weight"], rows])
        rel.state["pred_layer.proj.bias"] = torch.cat([rel.state["pred_layer.proj.bias"], biases])
        rel.state["lang_embeddings.weight"] = lang_rows(rel, new, args.lang_init, gen)
        rel.words = rel.words + pieces
        rel.counts = (rel.counts or [0] * old_rows) + [counts.get(p, 0) for p in pieces]
        rel.langs = every
        rel.files = {DICT: os.path.join(dest, DICT), **({} if authors else {SPM: os.path.join(dest, SPM)})}
        write_fairseq(rel, dest, force=True, source=args.checkpoint)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    old_manifest = manifest.load(old) or {}
    new_pairs = sorted({name.split(".", 1)[1] for name in corpora if "-" in name})
    record = {"source": os.path.abspath(args.checkpoint), "old_data_bin": os.path.abspath(old),
              "old_langs": every[: len(every) - len(new)], "new_langs": new, "langs": ",".join(every),
              "old_vocab": old_rows, "vocab": len(rel.words), "new_pieces": len(pieces), **bpe_record,
              "init": args.init, "lang_init": args.lang_init}
    write_json(os.path.join(dest, RECORD), record)
    manifest.write(dest, os.path.join(dest, DICT), every, sorted(set(old_manifest.get("pairs", [])) | set(new_pairs)))
    logger.info(f"wrote {dest}: {record['new_pieces']} new pieces, languages {record['langs']}")
    return record


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command; bad input exits 1 with a one-line message."""
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (safe_load.CheckpointLoadError, ValueError, OSError) as err:
        print(f"fairseq_xlm.cli.add_language: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    setup_logging()
    sys.exit(main(sys.argv[1:]))
