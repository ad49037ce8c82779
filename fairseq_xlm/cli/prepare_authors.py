"""``prepare --bpe authors``: the stages that differ from the sentencepiece path (``prepare_ids``). The release
is checked and its tokenizer installed (``authors_bpe``, instead of sample, spm and dict), the text is encoded
into Moses + BPE pieces (WORK/bpe/, text) and binarized by ``fairseq-preprocess`` with the release's dict.txt.
This path is left as the reference implementation: it is what ``prepare_ids`` is tested to equal byte for byte."""

import contextlib
import logging
import os
import shutil
from typing import Dict, List, Optional

from fairseq.data import Dictionary

from fairseq_xlm.cli.prepare_stages import PrepareConfig, PrepareError, atomic_path, batches, encode_stats
from fairseq_xlm.data.text_pieces import piece_encoder
from fairseq_xlm.paper_data import crash_point

logger = logging.getLogger("fairseq_xlm.cli.prepare")


def check_release(cfg: PrepareConfig, langs: List[str]) -> List[str]:
    """--bpe authors: --release is a converted release that knows every language of --langs; returns its
    languages in id order (training must use them all, in this order, as --langs)."""
    from fairseq_xlm.formats.readers import release_langs

    for name in ("checkpoint.pt", "dict.txt"):
        if not os.path.isfile(os.path.join(cfg.release, name)):
            raise PrepareError(f"{os.path.join(cfg.release, name)}: missing; --release must be a folder written by "
                               f"python -m fairseq_xlm.cli.convert xlm-to-fairseq")
    known = release_langs(os.path.join(cfg.release, "checkpoint.pt"))
    unknown = [lang for lang in langs if lang not in known]
    if unknown:
        raise PrepareError(f"--langs: {unknown} not among the languages of the release {cfg.release} "
                           f"({','.join(known)})")
    return known


def install_authors_bpe(cfg: PrepareConfig, langs: List[str]) -> dict:
    """--bpe authors: VOCAB must be the release's dictionary and CODES the BPE VOCAB was made with; then
    DESTDIR/authors_bpe/ (the tokenizer) and DESTDIR/dict.txt (the release's, so the binarized ids are the
    release's ids)."""
    from fairseq_xlm.data import authors_bpe

    if not cfg.release:
        return install_learned_bpe(cfg)
    known = check_release(cfg, langs)
    dict_path = os.path.join(cfg.release, "dict.txt")
    vocab = authors_bpe.read_vocab(cfg.vocab)
    authors_bpe.check_dictionary(vocab, Dictionary.load(dict_path).symbols, cfg.vocab, dict_path)
    hint = authors_bpe.lowercase_hint(vocab, cfg.lowercase_accents)
    if hint:
        logger.warning(f"{cfg.vocab}: {hint}")
    info = authors_bpe.write_folder(cfg.codes, cfg.vocab, os.path.join(cfg.destdir, authors_bpe.FOLDER),
                                    cfg.lowercase_accents)
    with atomic_path(os.path.join(cfg.destdir, "dict.txt")) as tmp:
        shutil.copyfile(dict_path, tmp)
    logger.info(f"authors' BPE: {info['merges']} merges, {info['words']} words = {dict_path}; release "
                f"languages {','.join(known)}")
    return dict(info, release_langs=known, outputs=[authors_bpe.FOLDER, "dict.txt"])



def install_learned_bpe(cfg: PrepareConfig) -> dict:
    """--bpe authors without --release: codes and vocabulary learned from scratch (``prepare_paper``). The
    tokenizer folder as with a release; dict.txt is the vocabulary itself (fastBPE's ``word count`` lines are
    fairseq's format), fairseq's specials first as always."""
    from fairseq_xlm.data import authors_bpe

    vocab = authors_bpe.read_vocab(cfg.vocab)
    info = authors_bpe.write_folder(cfg.codes, cfg.vocab, os.path.join(cfg.destdir, authors_bpe.FOLDER),
                                    cfg.lowercase_accents)
    dictionary = Dictionary()
    for word, count in vocab:
        dictionary.add_symbol(word, n=count)
    with atomic_path(os.path.join(cfg.destdir, "dict.txt")) as tmp:
        dictionary.save(tmp)
    logger.info(f"learned BPE: {info['merges']} merges, {info['words']} words -> dict.txt")
    return dict(info, outputs=[authors_bpe.FOLDER, "dict.txt"])


class PretokenizedBpe:
    """Pieces of text already in the authors' form: fastBPE's applybpe on each space-separated word."""

    def __init__(self, destdir: str):
        from fairseq_xlm.paper_data.fastbpe import ApplyBpe, read_codes

        self.bpe = ApplyBpe(read_codes(os.path.join(destdir, "authors_bpe", "merges.txt")))
        self.known = set(Dictionary.load(os.path.join(destdir, "dict.txt")).symbols)

    def batch(self, lines: List[str], lang: str) -> List[List[str]]:
        return [self.bpe.line(line).split() for line in lines]

    def unknown(self, pieces: List[str]) -> int:
        return sum(p not in self.known for p in pieces)


def encode_text(cfg: PrepareConfig, corpora: Dict[str, List[str]], work: str) -> dict:
    """Every raw file -> space-separated pieces of the authors' BPE in WORK/bpe (text: their vocabulary is
    only known as words); unknown pieces are counted. --pretokenized text only gets the codes applied."""
    encoder = PretokenizedBpe(cfg.destdir) if cfg.pretokenized else piece_encoder(cfg.destdir, cfg.workers)
    bpe_dir = os.path.join(work, "bpe")
    os.makedirs(bpe_dir, exist_ok=True)
    stats = {}
    for name, files in sorted(corpora.items()):
        label = os.path.join(cfg.raw, f"{name}.label")
        ins = files + ([f"{name}.label"] if len(files) == 1 and os.path.isfile(label) else [])
        kept = long = dropped = unk = tokens = 0
        first_long: Optional[int] = None
        with contextlib.ExitStack() as stack:
            srcs = [stack.enter_context(open(os.path.join(cfg.raw, f), encoding="utf-8")) for f in ins]
            tmps = [stack.enter_context(atomic_path(os.path.join(bpe_dir, f))) for f in ins]
            outs = [stack.enter_context(open(t, "w", encoding="utf-8")) for t in tmps]
            for start, rows in batches(zip(*srcs), 10_000):
                sides = [encoder.batch([row[i].rstrip("\n") for row in rows], files[i].rsplit(".", 1)[1])
                         for i in range(len(files))]
                for j, row in enumerate(rows):
                    ids = [side[j] for side in sides]
                    longest = max(len(x) for x in ids)
                    if longest > cfg.warn_line_tokens:
                        long += 1
                        first_long = first_long or start + j + 1
                    if cfg.max_line_tokens and longest > cfg.max_line_tokens:
                        dropped += 1
                        continue
                    kept += 1
                    for x, out in zip(ids, outs):
                        tokens += len(x)
                        unk += encoder.unknown(x)
                        out.write(" ".join(x) + "\n")
                    if len(ins) > len(files):
                        outs[-1].write(row[-1].rstrip("\n") + "\n")
                crash_point("encode")
        stats[name] = encode_stats(cfg, files[0], kept, long, first_long, dropped, tokens, unk)
    return {"stats": stats}



def binarize_text(cfg: PrepareConfig, corpora: Dict[str, List[str]], work: str) -> dict:
    """fairseq-preprocess with dict.txt, one temp destdir per language or pair, files moved into place."""
    units: Dict[str, List[str]] = {}
    for name in sorted(corpora):
        split, unit = name.split(".", 1)
        units.setdefault(unit, []).append(split)
    outputs = []
    for unit, splits in units.items():
        langs = unit.split("-")
        tmpdir = os.path.join(work, f"bin-{unit}.tmp")
        shutil.rmtree(tmpdir, ignore_errors=True)
        try:
            _preprocess(cfg, work, tmpdir, unit, langs, splits)
            crash_point("binarize")
            for split in splits:
                for lang in langs:
                    made = f"{split}.{langs[0]}-{langs[1] if len(langs) == 2 else 'None'}.{lang}"
                    final = f"{split}.{unit}.{lang}" if len(langs) == 2 else f"{split}.{lang}"
                    for ext in ("bin", "idx"):
                        os.replace(os.path.join(tmpdir, f"{made}.{ext}"), os.path.join(cfg.destdir, f"{final}.{ext}"))
                        outputs.append(f"{final}.{ext}")
                label = os.path.join(work, "bpe", f"{split}.{unit}.label")
                if len(langs) == 1 and os.path.isfile(label):
                    with atomic_path(os.path.join(cfg.destdir, f"{split}.{unit}.label")) as tmp:
                        shutil.copyfile(label, tmp)
                    outputs.append(f"{split}.{unit}.label")
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return {"outputs": outputs}


def _preprocess(cfg: PrepareConfig, work: str, tmpdir: str, unit: str, langs: List[str], splits: List[str]):
    from fairseq import options
    from fairseq_cli import preprocess  # imported late: importing it configures the root logger

    argv = ["--source-lang", langs[0], "--srcdict", os.path.join(cfg.destdir, "dict.txt"), "--destdir", tmpdir,
            "--dataset-impl", "mmap", "--workers", str(cfg.workers)]
    argv += ["--target-lang", langs[1], "--joined-dictionary"] if len(langs) == 2 else ["--only-source"]
    for split in splits:
        prefix = f"{split}.{unit}" if len(langs) == 2 else split
        argv += [f"--{split}pref", os.path.join(work, "bpe", prefix)]
    args = options.get_preprocessing_parser().parse_args(argv)
    handlers = list(preprocess.logger.handlers)
    try:
        preprocess.main(args)
    finally:
        for handler in preprocess.logger.handlers[len(handlers):]:  # main() adds a log file per call
            preprocess.logger.removeHandler(handler)
            handler.close()

