"""The stages of ``python -m fairseq_xlm.cli.prepare`` that every tokenization shares (check, sample, spm,
manifest), its settings (``PrepareConfig``) and the atomic-file helpers all stages use; encode, dict and
binarize are in ``prepare_ids`` (sentencepiece) and ``prepare_authors`` (--bpe authors); ``prepare.run`` chains
them."""

import contextlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from typing import Dict, Iterator, List

import numpy as np
import sentencepiece as spm

from fairseq_xlm import errors
from fairseq_xlm.data import manifest
from fairseq_xlm.data.layout import MASK
from fairseq_xlm.data.schedule import smoothed_probs
from fairseq_xlm.data.utf8_text import utf8_line_count

logger = logging.getLogger("fairseq_xlm.cli.prepare")

SPLITS = ("train", "valid", "test")
STAGES = ("check", "sample", "spm", "encode", "dict", "binarize", "manifest")  # --bpe authors: authors_bpe for sample, spm, dict
# fairseq's Dictionary adds these itself; a spm piece spelled the same would make dict.txt unloadable.
RESERVED = {"<s>", "<pad>", "</s>", "<unk>", MASK}


class PrepareError(ValueError):
    """Bad input or settings; the message names the file or flag."""


@dataclass
class PrepareConfig:
    """Settings of one data-bin build (every field is a command-line flag)."""

    raw: str = field(metadata={"help": "folder with {split}.{lang} and {split}.{l1}-{l2}.{lang} raw text"})
    destdir: str = field(metadata={"help": "output data-bin folder (work files go to DESTDIR/prep)"})
    langs: str = field(metadata={"help": "comma-separated languages, e.g. en,es,ny"})
    vocab_size: int = field(default=8000, metadata={"help": "sentencepiece BPE vocabulary size"})
    character_coverage: float = field(default=1.0, metadata={"help": "sentencepiece character coverage "
                                      "(1.0 keeps every training character, like XLM's fastBPE; ~0.9995 for CJK)"})
    alpha: float = field(default=0.5, metadata={"help": "language smoothing of the BPE sample: q ∝ p^alpha"})
    sample_lines: int = field(default=1_000_000, metadata={"help": "lines in the BPE training sample (capped "
                              "at the number of training lines)"})
    seed: int = field(default=1, metadata={"help": "seed of the BPE sample"})
    warn_line_tokens: int = field(default=1024, metadata={"help": "count and warn about lines longer than "
                                  "this many BPE tokens (the task cuts them into tokens-per-sample blocks)"})
    max_line_tokens: int = field(default=0, metadata={"help": "drop lines (parallel: pairs) longer than this "
                                 "many BPE tokens; 0 keeps all"})
    workers: int = field(default=1, metadata={"help": "sentencepiece threads (BPE training and encoding; "
                         "binarizing is vectorised; --bpe authors: fairseq-preprocess processes)"})
    shards: int = field(default=1, metadata={"help": "split the training text into N data-bins DESTDIR/shard0 "
                        "... shard{N-1} (same dict.txt and BPE; valid/test in shard0); train with the path "
                        "DESTDIR/shard0:DESTDIR/shard1:... (one shard per epoch)"})
    bpe: str = field(default="sentencepiece", metadata={"help": "sentencepiece (learn one shared BPE) or authors "
                     "(the authors' Moses + BPE codes, for their released checkpoints: needs --release, --codes, "
                     "--vocab)"})
    release: str = field(default="", metadata={"help": "--bpe authors: the folder convert xlm-to-fairseq wrote "
                         "(checkpoint.pt, dict.txt); its dict.txt becomes the data-bin's"})
    codes: str = field(default="", metadata={"help": "--bpe authors: the release's BPE codes (e.g. codes_xnli_15)"})
    vocab: str = field(default="", metadata={"help": "--bpe authors: the release's vocabulary (e.g. vocab_xnli_15)"})
    lowercase_accents: bool = field(default=False, metadata={"help": "--bpe authors: lowercase and strip "
                                    "accents after Moses, as for the XNLI-15 releases"})
    pretokenized: bool = field(default=False, metadata={"help": "--bpe authors: the raw text is already in the "
                               "authors' form (tokenized, lowercased if asked): encode only applies the BPE codes"})
    sample_file: str = field(default="", metadata={"help": "sentencepiece: learn the BPE on this sample (e.g. the "
                             "language mix of prepare_paper) instead of drawing one"})
    valid_optional: bool = field(default=False, metadata={"help": "allow a language without valid.{lang} (training "
                                 "then has no validation for it: pass --disable-validation or validate on pairs)"})
    force: bool = field(default=False, metadata={"help": "redo every stage even if it is done"})


# ---------------------------------------------------------------- atomic files and stage markers


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary name for ``path``; rename on success, delete on error."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp) if os.path.isdir(tmp) else os.remove(tmp)


def remove_stale_temporaries(folder: str) -> List[str]:
    """Delete the ``NAME.tmp<pid>`` files and folders that a killed prepare (its pid gone) left under ``folder``
    (atomic_path removes its own on errors, but a SIGKILL runs no cleanup); returns their paths."""
    removed = []
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            pid = name.rpartition(".tmp")[2]
            if ".tmp" in name and pid.isdigit() and not _alive(int(pid)):
                path = os.path.join(root, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
                removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_json(path: str, obj) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True)


# ---------------------------------------------------------------- check


def raw_inventory(cfg: PrepareConfig, langs: List[str]) -> Dict[str, List[str]]:
    """{corpus name: [raw file per language]}: 'train.en' -> [train.en], 'train.en-es' -> [.en, .es]."""
    if not os.path.isdir(cfg.raw):
        raise PrepareError(f"--raw {cfg.raw}: no such folder")
    corpora: Dict[str, List[str]] = {}
    for lang in langs:
        train = os.path.join(cfg.raw, f"train.{lang}")
        if not os.path.isfile(train):
            raise PrepareError(f"{train}: missing; every language of --langs needs monolingual train text")
        for split in SPLITS:
            if os.path.isfile(os.path.join(cfg.raw, f"{split}.{lang}")):
                corpora[f"{split}.{lang}"] = [f"{split}.{lang}"]
            elif split == "valid" and not cfg.valid_optional:
                # training validates every language and would fail only then, after the BPE and binarizing
                raise PrepareError(f"{os.path.join(cfg.raw, f'valid.{lang}')}: missing; every language needs "
                                   f"validation text (or pass --valid-optional)")
            else:
                logger.warning(f"{os.path.join(cfg.raw, f'{split}.{lang}')}: absent, no monolingual {split} for {lang}")
    for split in SPLITS:
        for l1 in langs:
            for l2 in langs:
                sides = [f"{split}.{l1}-{l2}.{lang}" for lang in (l1, l2)]
                present = [os.path.isfile(os.path.join(cfg.raw, s)) for s in sides]
                if l1 != l2 and any(present):
                    if not all(present):
                        missing = os.path.join(cfg.raw, sides[present.index(False)])
                        raise PrepareError(f"{missing}: missing, the other side of this parallel corpus exists")
                    corpora[f"{split}.{l1}-{l2}"] = sides
    return corpora


def count_lines(path: str) -> int:
    """Lines of ``path``; raises PrepareError naming file and line for bytes that are not UTF-8."""
    return utf8_line_count(path, PrepareError)


def check(cfg: PrepareConfig, corpora: Dict[str, List[str]], langs: List[str]) -> dict:
    """Validate every raw file; returns line counts and empty-line counts per file name."""
    lines: Dict[str, int] = {}
    empty: Dict[str, int] = {}
    for name, files in corpora.items():
        for file in files:
            path = os.path.join(cfg.raw, file)
            lines[file] = count_lines(path)
            with open(path, encoding="utf-8") as f:
                blank = [n for n, line in enumerate(f, 1) if not line.strip()]
            if len(blank) == lines[file]:
                raise PrepareError(f"{path}: empty split (no non-blank line)")
            if blank:
                empty[file] = len(blank)
                logger.warning(f"{path}: {len(blank)} empty line(s) (first: line {blank[0]}); kept, so that "
                               f"parallel sides and labels stay line-aligned (see docs/failures.md)")
        if len({lines[f] for f in files}) > 1:
            raise PrepareError(f"{os.path.join(cfg.raw, files[1])}: {lines[files[1]]} lines but "
                               f"{files[0]} has {lines[files[0]]}; parallel sides must be line-aligned")
        label = os.path.join(cfg.raw, f"{name}.label")
        if len(files) == 1 and os.path.isfile(label):
            lines[f"{name}.label"] = count_lines(label)
            if lines[f"{name}.label"] != lines[files[0]]:
                raise PrepareError(f"{label}: {lines[f'{name}.label']} labels for {lines[files[0]]} lines")
    return {"lines": lines, "empty": empty}


def raw_stats(cfg: PrepareConfig, corpora: Dict[str, List[str]]) -> list:
    """(file, size, mtime) of every raw input: the check stage reruns when any changes."""
    files = sorted({f for fs in corpora.values() for f in fs} | {f"{n}.label" for n in corpora})
    paths = [(f, os.path.join(cfg.raw, f)) for f in files]
    return [(f, os.stat(p).st_size, os.stat(p).st_mtime_ns) for f, p in paths if os.path.isfile(p)]


# ---------------------------------------------------------------- sample, spm


def train_files(corpora: Dict[str, List[str]], lang: str) -> List[str]:
    """Raw training files holding ``lang``: its monolingual text and its side of every pair."""
    return sorted(f for name, fs in corpora.items() if name.startswith("train.") for f in fs
                  if f.endswith(f".{lang}"))


def draw_sample(cfg: PrepareConfig, corpora, langs: List[str], lines: Dict[str, int], out: str) -> dict:
    """Write the BPE sample: n ~ Multinomial(sample_lines, q), then n_i lines of language i, drawn
    without replacement while there are enough, else every line repeated (low-resource upsampling)."""
    counts = {lang: sum(lines[f] for f in train_files(corpora, lang)) for lang in langs}
    probs = dict(zip(langs, smoothed_probs([counts[lang] for lang in langs], cfg.alpha).tolist()))
    rng = np.random.default_rng(cfg.seed)
    # more lines than the corpus holds would only repeat it: the shares, not the size, matter for BPE
    size = min(cfg.sample_lines, sum(counts.values()))
    drawn = dict(zip(langs, rng.multinomial(size, [probs[lang] for lang in langs]).tolist()))
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for lang in langs:
            total, n = counts[lang], drawn[lang]
            idx = np.concatenate([np.tile(np.arange(total), n // total),
                                  rng.choice(total, n % total, replace=False)])
            times = np.bincount(idx, minlength=total)
            k = 0
            for file in train_files(corpora, lang):
                with open(os.path.join(cfg.raw, file), encoding="utf-8") as src:
                    for line in src:
                        if times[k]:
                            f.write((line.rstrip("\n") + "\n") * int(times[k]))
                        k += 1
    logger.info(f"BPE sample: lines p={counts} -> q={ {k: round(v, 4) for k, v in probs.items()} } -> {drawn}")
    return {"counts": counts, "probs": probs, "drawn": drawn}


def train_spm(cfg: PrepareConfig, sample: str, work: str) -> dict:
    """One BPE model for all languages -> DESTDIR/spm.model and spm.vocab."""
    # no pid in the name: sentencepiece stores its model_prefix (and input path) in spm.model, and a rerun
    # into the same DESTDIR must give the same bytes
    prefix = os.path.join(work, "spm.tmp")
    try:
        spm.SentencePieceTrainer.train(
            input=sample, model_prefix=prefix, model_type="bpe", vocab_size=cfg.vocab_size,
            character_coverage=cfg.character_coverage, num_threads=cfg.workers, input_sentence_size=0,
            # soft limit: a small corpus yields fewer pieces instead of failing; fairseq appends </s> itself
            hard_vocab_limit=False, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, minloglevel=2,
        )
        for ext in ("model", "vocab"):
            os.replace(f"{prefix}.{ext}", os.path.join(cfg.destdir, f"spm.{ext}"))
    except RuntimeError as e:
        if errors.is_disk_full(e, prefix):  # sentencepiece cannot write its model: not a --vocab-size problem
            for ext in ("model", "vocab"):  # first, so that the message gives the free space without them
                if os.path.exists(f"{prefix}.{ext}"):
                    os.remove(f"{prefix}.{ext}")
            raise errors.disk_full(f"{prefix}.model") from None
        raise PrepareError(f"sentencepiece failed on {sample} (check --vocab-size {cfg.vocab_size}): {e}") from None
    finally:
        for ext in ("model", "vocab"):
            if os.path.exists(f"{prefix}.{ext}"):
                os.remove(f"{prefix}.{ext}")
    size = spm.SentencePieceProcessor(model_file=os.path.join(cfg.destdir, "spm.model")).get_piece_size()
    logger.info(f"sentencepiece BPE: {size} pieces (asked {cfg.vocab_size})")
    return {"pieces": size, "outputs": ["spm.model", "spm.vocab"]}


def batches(rows, size: int):
    """(index of the first row, rows) for every ``size`` rows of ``rows``; the last batch may be shorter."""
    batch, start = [], 0
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield start, batch
            start, batch = start + size, []
    if batch:
        yield start, batch


def encode_stats(cfg: PrepareConfig, file: str, kept: int, long: int, first_long, dropped: int, tokens: int,
                 unk: int) -> dict:
    """The encode stage's record of one corpus (``file``: its first raw file), after warning about long lines;
    PrepareError when --max-line-tokens left no line."""
    if long:
        logger.warning(f"{os.path.join(cfg.raw, file)}: {long} line(s) longer than --warn-line-tokens "
                       f"{cfg.warn_line_tokens} BPE tokens (first: line {first_long})"
                       + (f"; {dropped} dropped by --max-line-tokens" if dropped else
                          "; kept, the task cuts them into tokens-per-sample blocks"))
    if kept == 0:
        raise PrepareError(f"{os.path.join(cfg.raw, file)}: no line left after --max-line-tokens {cfg.max_line_tokens}")
    return {"lines": kept, "long": long, "dropped": dropped, "tokens": tokens, "unk": unk}


def write_manifest(cfg: PrepareConfig, corpora: Dict[str, List[str]], langs: List[str]) -> dict:
    """manifest.json in DESTDIR (or in each DESTDIR/shard{i}): size and sha256 of every file, the languages
    and pairs (tasks check it at load)."""
    pairs = sorted({name.split(".", 1)[1] for name in corpora if "-" in name})
    folders = ["."] if cfg.shards == 1 else [f"shard{i}" for i in range(cfg.shards)]
    for folder in folders:
        path = os.path.join(cfg.destdir, folder)
        manifest.write(path, os.path.join(path, "dict.txt"), langs, pairs)
    return {"outputs": [os.path.normpath(os.path.join(folder, manifest.NAME)) for folder in folders]}
