"""``add_language`` on a data-bin of the authors' BPE (``prepare --bpe authors``: ``authors_bpe/`` with their
fastBPE codes as ``merges.txt`` and the vocabulary as ``vocab.json``), where the sentencepiece path grows
``spm.model``.

The new text goes through the data-bin's own tokenization (Moses + lowercasing as its ``tokenizer_config.json``
says, or as given with ``--pretokenized``), then ``--vocab-size`` merges are learned on its words with the
project's fastBPE learner (``paper_data.fastbpe.learn_bpe``, ``fast learnbpe N``). Of those, the merges that
would re-segment the old data-bin's text are left out (``data.bpe_extend``), the rest appended to the codes;
the tokens the grown codes give the new text that the old vocabulary lacks become new vocabulary words (by
count, as fastBPE's ``getvocab``). ``add_language`` then writes dict.txt and the checkpoint as for
sentencepiece; the new text is binarized as ``prepare --bpe authors`` binarizes (``prepare_authors``).
"""

import json
import logging
import os
import shutil
from typing import Dict, List, Tuple

from fairseq_xlm.cli import prepare_ids
from fairseq_xlm.cli.prepare_authors import PretokenizedBpe, binarize_text, encode_text
from fairseq_xlm.cli.prepare_stages import PrepareConfig, atomic_path
from fairseq_xlm.data import authors_bpe, bpe_extend, layout
from fairseq_xlm.errors import DataBinError
from fairseq_xlm.formats.released import DICT, N_SPECIALS, Released
from fairseq_xlm.paper_data import fastbpe

logger = logging.getLogger("fairseq_xlm.cli.add_language")

FOLDER = authors_bpe.FOLDER
FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")


def is_authors(data_bin: str) -> bool:
    """Whether ``data_bin`` was made by ``prepare --bpe authors``."""
    return os.path.isdir(os.path.join(data_bin, FOLDER))


def read_old(old: str) -> Tuple[bpe_extend.Codes, Dict[str, int]]:
    """(codes, vocab.json) of OLD's authors_bpe/, each file checked."""
    folder = os.path.join(old, FOLDER)
    for name in FILES:
        if not os.path.isfile(os.path.join(folder, name)):
            raise DataBinError(f"{os.path.join(folder, name)}: missing; {folder} must be made by prepare --bpe authors")
    try:
        codes = authors_bpe.read_codes(os.path.join(folder, "merges.txt"))
        with open(os.path.join(folder, "vocab.json"), encoding="utf-8") as f:
            vocab = json.load(f)
    except (authors_bpe.AuthorsBpeError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataBinError(f"{folder}: {err}") from None
    return codes, vocab


def check_bpe(rel: Released, codes: bpe_extend.Codes, vocab: Dict[str, int], old: str, ckpt: str) -> None:
    """OLD's authors_bpe/ must be the tokenization of CKPT: its vocabulary the dictionary's words, its codes
    the ones that vocabulary was made with."""
    folder = os.path.join(old, FOLDER)
    words = {authors_bpe.authors_piece(p) for p in vocab if p not in authors_bpe.SPECIALS}
    ours = set(rel.words[N_SPECIALS:]) - {layout.MASK} - set(authors_bpe.SPECIALS)
    extra, missing = sorted(ours - words), sorted(words - ours)
    if extra or missing:
        raise DataBinError(
            f"{os.path.join(folder, 'vocab.json')} does not match the dictionary of {ckpt} "
            f"({os.path.join(old, DICT)}): {len(extra)} words are not in it (first {extra[:3]}), {len(missing)} of "
            f"its words are not in the dictionary (first {missing[:3]}); give the data-bin the checkpoint was "
            f"trained on")
    try:
        authors_bpe.check_codes(codes, [(w, 0) for w in sorted(words)], os.path.join(folder, "merges.txt"),
                                os.path.join(folder, "vocab.json"))
    except authors_bpe.AuthorsBpeError as err:
        raise DataBinError(str(err)) from None


def _old_encoder(old: str, pretokenized: bool):
    if pretokenized:
        return PretokenizedBpe(old)
    return authors_bpe.AuthorsBpe(os.path.join(old, FOLDER))


def new_words(old: str, trains: List[str], pretokenized: bool, out: str) -> Dict[str, int]:
    """The words of the new training text in the data-bin's tokenization (``{word: count}``, first seen
    first), also written to ``out`` one sentence a line for the learner."""
    encoder, counts = _old_encoder(old, pretokenized), {}
    with open(out, "w", encoding="utf-8") as f:
        for path in trains:
            lang = path.rsplit(".", 1)[1]
            with open(path, encoding="utf-8") as lines:
                for line in lines:
                    pieces = encoder.batch([line.rstrip("\n")], lang)[0]
                    words = " ".join(pieces).replace(authors_bpe.CONTINUE + " ", "").split()
                    for word in words:
                        counts[word] = counts.get(word, 0) + 1
                    f.write(" ".join(words) + "\n")
    return counts


def conflicts(old: str) -> Tuple[set, set, set]:
    """``bpe_extend.final_pairs`` of every binarized file of OLD."""
    dictionary = layout.load_dictionary(old)
    symbols = list(dictionary.symbols)
    pairs, left, right = set(), set(), set()
    for name in sorted(os.listdir(old)):
        if name.endswith(".bin"):
            tokens, _ = prepare_ids.read_tokens(os.path.join(old, name[: -len(".bin")]))
            p, a, b = bpe_extend.final_pairs(tokens, dictionary.eos(), dictionary.unk(), symbols)
            pairs |= p
            left |= a
            right |= b
    return pairs, left, right


def grow(args, old: str, dest: str, trains: List[str], work: str, rel: Released, codes: bpe_extend.Codes,
         vocab: Dict[str, int]):
    """Learn, filter and append merges to OLD's ``codes``; write DEST/authors_bpe/. Returns (new vocabulary words
    in dict.txt's order, their counts, the old split of pieces for ``--init mean``, what to record)."""
    old_rank = bpe_extend.ranks(codes)
    known = set(rel.words)
    learned, kept, pieces, counts = [], [], [], {}
    if args.vocab_size > 0:
        words_file = os.path.join(work, "words.txt")
        words = new_words(old, trains, args.pretokenized, words_file)
        # learned on the old codes' segmentation of the new words: each merge continues the old codes
        learned = fastbpe.learn_bpe([words_file], args.vocab_size,
                                    start=lambda w: fastbpe.apply_merges(list(w[:-1]) + [w[-1] + fastbpe.END], old_rank))
        pairs, left, right = conflicts(old)
        kept = bpe_extend.drop_conflicts(learned, codes, pairs, left, right)
        counts = bpe_extend.token_counts(words, bpe_extend.ranks(codes + kept))
        # by count, ties in byte order: fastBPE's getvocab order
        pieces = sorted((t for t in counts if t not in known), key=lambda t: (-counts[t], t.encode("utf-8")))
        if not pieces:
            raise ValueError(f"--raw {', '.join(trains)}: yields no new pieces ({len(learned)} merges learned on "
                             f"it, {len(learned) - len(kept)} of them left out: they would re-segment {old}'s text; "
                             f"every token the others give is in its vocabulary)")
        logger.info(f"{len(kept)} of {len(learned)} merges learned on the new text appended "
                    f"({len(learned) - len(kept)} left out: they would re-segment {old}'s text); "
                    f"{len(pieces)} new words")

    folder = os.path.join(dest, FOLDER)
    os.makedirs(folder, exist_ok=True)
    with atomic_path(os.path.join(folder, "merges.txt")) as tmp:
        fastbpe.write_codes(codes + kept, tmp)
    grown = dict(vocab)
    for piece in pieces:
        grown[authors_bpe.hf_piece(piece)] = len(grown)
    with atomic_path(os.path.join(folder, "vocab.json")) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(grown, f, ensure_ascii=False)
    shutil.copyfile(os.path.join(old, FOLDER, "tokenizer_config.json"), os.path.join(folder, "tokenizer_config.json"))

    def split(new_pieces: List[str]) -> List[List[str]]:
        return [bpe_extend.split_piece(p, old_rank) for p in new_pieces]

    record = {"bpe": "authors", "merges_learned": len(learned), "merges_appended": len(kept)}
    return pieces, counts, split, record


def binarize(args, raw: str, dest: str, new: List[str], corpora: Dict[str, List[str]], work: str) -> None:
    """The new corpora through DEST's grown tokenization and dict.txt, as ``prepare --bpe authors`` does."""
    cfg = PrepareConfig(raw=raw, destdir=dest, langs=",".join(new), seed=args.seed, bpe="authors",
                        pretokenized=args.pretokenized)
    encode_text(cfg, corpora, work)
    binarize_text(cfg, corpora, work)

