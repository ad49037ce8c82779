"""Raw text -> one shared sentencepiece BPE -> one joined dictionary -> a fairseq_xlm data-bin.

    python -m fairseq_xlm.cli.prepare --raw RAW --destdir data-bin/NAME --langs en,es [--vocab-size 8000 ...]
    python -m fairseq_xlm.cli.prepare --raw RAW --destdir data-bin/NAME --langs en,fr --bpe authors \\
        --release CONVERTED_DIR --codes codes_xnli_15 --vocab vocab_xnli_15 [--lowercase-accents]

RAW holds ``{train,valid,test}.{lang}`` (train required for every language) and optionally parallel
``{split}.{l1}-{l2}.{l1|l2}`` and genre labels ``{split}.{lang}.label``. The output is the layout of
``fairseq_xlm.data.layout`` (plus the label files, copied line-aligned). Stages, each skipped when its
marker in DESTDIR/prep/ matches its settings and its outputs exist:

    check     every file exists, is UTF-8, non-empty; parallel sides and labels are line-aligned
    sample    BPE training sample, languages drawn with q_i ∝ p_i^alpha (XLM, Section 3.1)
    spm       one sentencepiece BPE model for all languages -> spm.model, spm.vocab
    encode    all splits into sentencepiece ids (DESTDIR/prep/ids/); long lines counted (or dropped)
    dict      one joined fairseq dictionary (all spm pieces, by training frequency) -> dict.txt
    binarize  ids -> dictionary ids -> {split}.{lang}.bin/idx, the bytes fairseq-preprocess would write
              (with --shards N: one stage per shard, DESTDIR/shard{i}/); see ``prepare_ids``
    manifest  manifest.json: size and sha256 of every file (of each shard; tasks check it at load; see data/manifest.py)

With ``--bpe authors`` (the authors' released checkpoints) ``authors_bpe`` replaces sample, spm and dict: it
checks the languages, codes and vocabulary against the converted release and installs DESTDIR/authors_bpe/
(Moses + BPE, ``fairseq_xlm.data.authors_bpe``) and the release's dict.txt; encode then applies them
(text pieces in DESTDIR/prep/bpe/) and binarize runs fairseq-preprocess (``prepare_authors``).

Every file is written under a temporary name and renamed, so a crash never leaves a half-written output.
"""

import hashlib
import json
import logging
import os
import sys
from typing import Optional, Sequence

from fairseq_xlm import errors
from fairseq_xlm.cli import config_parser, setup_logging
from fairseq_xlm.cli import prepare_ids
from fairseq_xlm.cli.prepare_authors import binarize_text, check_release, encode_text, install_authors_bpe
from fairseq_xlm.cli.prepare_stages import (STAGES, PrepareConfig, PrepareError, check, draw_sample, raw_inventory,
                                            raw_stats, remove_stale_temporaries, train_spm, write_json,
                                            write_manifest)
from fairseq_xlm.data.layout import parse_langs

logger = logging.getLogger("fairseq_xlm.cli.prepare")

__all__ = ["STAGES", "PrepareConfig", "PrepareError", "Stages", "config_parser", "main", "run"]


class Stages:
    """Runs stages in order; a stage is skipped when its marker holds the same fingerprint (its settings
    chained with the previous stage's) and the outputs it lists exist."""

    def __init__(self, cfg: PrepareConfig, work: str):
        self.cfg, self.work, self.chain = cfg, work, ""

    def run(self, name: str, params: dict, fn) -> dict:
        fingerprint = hashlib.sha1(json.dumps([self.chain, name, params], sort_keys=True).encode()).hexdigest()
        self.chain = fingerprint
        marker = os.path.join(self.work, f"{name}.done")
        if not self.cfg.force and os.path.isfile(marker):
            with open(marker, encoding="utf-8") as f:
                done = json.load(f)
            outputs = [os.path.join(self.cfg.destdir, p) for p in done["result"].get("outputs", [])]
            if done["fingerprint"] == fingerprint and all(os.path.exists(p) for p in outputs):
                logger.info(f"stage {name}: done already, skipping ({marker})")
                return done["result"]
        if os.path.exists(marker):
            os.remove(marker)  # a rerun that crashes must not leave the old marker claiming success
        logger.info(f"stage {name}: running")
        result = fn()
        write_json(marker, {"fingerprint": fingerprint, "result": result})
        return result


# ---------------------------------------------------------------- driver


def run(cfg: PrepareConfig) -> dict:
    """Run (or skip) every stage; returns {stage: result}."""
    langs = parse_langs(cfg.langs)
    _validate(cfg)
    if cfg.bpe == "authors" and cfg.release:
        check_release(cfg, langs)  # before the raw files: a language the release lacks is the first error
    work = os.path.join(cfg.destdir, "prep")
    os.makedirs(work, exist_ok=True)
    stale = remove_stale_temporaries(cfg.destdir)
    if stale:
        logger.warning(f"removed {len(stale)} temporary file(s) of a killed prepare: {', '.join(stale)}")
    corpora = raw_inventory(cfg, langs)
    stages, out = Stages(cfg, work), {}
    out["check"] = stages.run("check", {"langs": langs, "corpora": corpora, "raw": raw_stats(cfg, corpora)},
                              lambda: check(cfg, corpora, langs))
    if cfg.bpe == "authors":
        files = [(p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in (cfg.codes, cfg.vocab, *(
            os.path.join(cfg.release, name) for name in ("dict.txt", "checkpoint.pt") if cfg.release))
                 if os.path.isfile(p)]
        out["authors_bpe"] = stages.run("authors_bpe", {"files": files, "lowercase": cfg.lowercase_accents},
                                        lambda: install_authors_bpe(cfg, langs))
    elif cfg.sample_file:  # a sample drawn by the caller (prepare_paper's language mix)
        sample = cfg.sample_file
        out["sample"] = stages.run("sample", {"file": [sample, os.stat(sample).st_size, os.stat(sample).st_mtime_ns]},
                                   lambda: {"given": sample})
    else:
        sample = os.path.join(work, "sample.txt")
        out["sample"] = stages.run(
            "sample", {"alpha": cfg.alpha, "lines": cfg.sample_lines, "seed": cfg.seed},
            lambda: dict(draw_sample(cfg, corpora, langs, out["check"]["lines"], sample), outputs=["prep/sample.txt"]))
    if cfg.bpe != "authors":
        out["spm"] = stages.run("spm", {"vocab": cfg.vocab_size, "coverage": cfg.character_coverage},
                                lambda: train_spm(cfg, sample, work))
    if cfg.bpe == "authors":  # text pieces, fairseq-preprocess; the release's dictionary
        out["encode"] = stages.run("encode", {"max": cfg.max_line_tokens, "warn": cfg.warn_line_tokens,
                                              **({"pretokenized": 1} if cfg.pretokenized else {})},
                                   lambda: encode_text(cfg, corpora, work))
        out["binarize"] = stages.run("binarize", {}, lambda: binarize_text(cfg, corpora, work))
    else:  # sentencepiece ids throughout ("ids": a data-bin prepared from text pieces redoes encode)
        out["encode"] = stages.run("encode", {"max": cfg.max_line_tokens, "warn": cfg.warn_line_tokens, "ids": 1},
                                   lambda: prepare_ids.encode(cfg, corpora, work))
        out["dict"] = stages.run("dict", {}, lambda: prepare_ids.build_dict(cfg, corpora, work))
    if cfg.shards == 1 and cfg.bpe != "authors":
        out["binarize"] = stages.run("binarize", {}, lambda: prepare_ids.binarize(cfg, corpora, work))
    for i in range(cfg.shards if cfg.shards > 1 else 0):  # one stage per shard: a crash redoes only that shard
        out[f"binarize-shard{i}"] = stages.run(f"binarize-shard{i}", {"shards": cfg.shards},
                                               lambda i=i: prepare_ids.binarize_shard(cfg, corpora, work, i))
    out["manifest"] = stages.run("manifest", {"shards": cfg.shards}, lambda: write_manifest(cfg, corpora, langs))
    if cfg.shards == 1:
        logger.info(f"data-bin ready: {cfg.destdir}")
    else:
        paths = os.pathsep.join(os.path.join(cfg.destdir, f"shard{i}") for i in range(cfg.shards))
        logger.info(f"sharded data-bin ready: {paths}")
    return out


def _validate(cfg: PrepareConfig) -> None:
    rules = [
        (cfg.vocab_size > 0, "--vocab-size must be > 0"),
        (0 < cfg.character_coverage <= 1, "--character-coverage must be in (0, 1]"),
        (cfg.alpha >= 0, "--alpha must be >= 0 (0: uniform over languages, 1: proportional)"),
        (cfg.sample_lines > 0, "--sample-lines must be > 0"),
        (cfg.max_line_tokens >= 0, "--max-line-tokens must be >= 0 (0: keep all lines)"),
        (cfg.warn_line_tokens > 0, "--warn-line-tokens must be > 0"),
        (cfg.workers > 0, "--workers must be > 0"),
        (cfg.shards > 0, "--shards must be > 0"),
        (cfg.bpe in ("sentencepiece", "authors"), f"--bpe {cfg.bpe}: choose sentencepiece or authors"),
        (cfg.shards == 1 or cfg.bpe != "authors", "--shards: not with --bpe authors (one data-bin per "
                                                  "release)"),
    ]
    authors = {"--release": cfg.release, "--codes": cfg.codes, "--vocab": cfg.vocab}
    if cfg.bpe == "authors":
        # without --release: codes and vocabulary learned from scratch (prepare_paper); dict.txt from the vocabulary
        rules += [(bool(value), f"--bpe authors needs {flag}") for flag, value in authors.items() if flag != "--release"]
        rules.append((not os.path.exists(os.path.join(cfg.destdir, "spm.model")),
                      f"{cfg.destdir} holds a sentencepiece data-bin (spm.model); give --bpe authors a new --destdir"))
    else:
        given = [flag for flag, value in authors.items() if value] + (["--lowercase-accents"] if cfg.lowercase_accents
                                                                      else []) + (["--pretokenized"] if cfg.pretokenized else [])
        rules.append((not given, f"{', '.join(given)}: only with --bpe authors"))
        rules.append((not os.path.isdir(os.path.join(cfg.destdir, "authors_bpe")),
                      f"{cfg.destdir} holds an authors' BPE data-bin (authors_bpe/); give --bpe sentencepiece a new --destdir"))
    rules.append((not cfg.sample_file or os.path.isfile(cfg.sample_file), f"--sample-file {cfg.sample_file}: no such file"))
    rules.append((not cfg.sample_file or cfg.bpe == "sentencepiece", "--sample-file: only with --bpe sentencepiece"))
    for ok, message in rules:
        if not ok:
            raise PrepareError(message)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """CLI entry point: parse flags, run the stages, exit with one clear message on bad input."""
    parser = config_parser(PrepareConfig, "python -m fairseq_xlm.cli.prepare", __doc__)
    cfg = PrepareConfig(**vars(parser.parse_args(argv)))
    try:
        return run(cfg)
    except ValueError as e:  # PrepareError and parse_langs' errors: one line, no traceback
        raise SystemExit(f"error: {e}")
    except (OSError, RuntimeError) as e:  # a full disk: name it (files under final names are complete)
        if isinstance(e, errors.DiskFullError):
            raise SystemExit(f"error: {e.strerror}")
        if errors.is_disk_full(e, os.path.join(cfg.destdir, "x")):
            raise SystemExit(f"error: {errors.disk_full(cfg.destdir).strerror}")
        raise


if __name__ == "__main__":
    setup_logging()
    main(sys.argv[1:])
