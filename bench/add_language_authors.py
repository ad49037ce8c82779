"""add_language on an authors'-BPE data-bin at the study's scale: ny tokens per word before and after, how many
merges are appended, and whether every en/es line keeps its ids (docs/add-language.md, "The authors' BPE").

    python bench/add_language_authors.py --raw OUT/raw [--merges 1000] [--new-merges 1000] [--from-characters]

RAW is recipes/add_language.sh's raw text (train/valid/test .en .es .ny). An en+es authors' BPE of MERGES codes
is learned on the Moses-tokenized (sacremoses, cased) en+es training text with the project's fastBPE learner,
the data-bin made by ``prepare --bpe authors``, a random xlm_tiny checkpoint written for it, and add_language
run with --vocab-size 0 and NEW_MERGES. ``--from-characters`` learns the new merges from characters instead of
from the old codes' segmentation (the comparison in the docs). Prints one JSON line.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from unittest import mock

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import fairseq_xlm  # noqa: E402,F401  (registers models, installs safe loading)
from fairseq_xlm.cli import add_language, prepare  # noqa: E402
from fairseq_xlm.cli.prepare_ids import read_tokens  # noqa: E402
from fairseq_xlm.data import layout  # noqa: E402
from fairseq_xlm.data.authors_bpe import AuthorsBpe  # noqa: E402
from fairseq_xlm.models import factory  # noqa: E402
from fairseq_xlm.paper_data import fastbpe  # noqa: E402

SPLITS = ("train", "valid", "test")


def old_data_bin(raw: str, work: str, merges: int) -> str:
    """codes + vocab learned on the en+es training text, then prepare --bpe authors on mono en, es."""
    import sacremoses

    os.makedirs(os.path.join(work, "raw"))
    for split in SPLITS:
        for lang in ("en", "es"):
            os.symlink(os.path.abspath(os.path.join(raw, f"{split}.{lang}")), os.path.join(work, "raw", f"{split}.{lang}"))
    words = os.path.join(work, "words.txt")
    with open(words, "w", encoding="utf-8") as f:
        for lang in ("en", "es"):
            norm, tok = sacremoses.MosesPunctNormalizer(lang=lang), sacremoses.MosesTokenizer(lang=lang)
            with open(os.path.join(raw, f"train.{lang}"), encoding="utf-8") as lines:
                f.writelines(" ".join(tok.tokenize(norm.normalize(line), escape=False)) + "\n" for line in lines)
    codes = fastbpe.learn_bpe([words], merges)
    fastbpe.write_codes(codes, os.path.join(work, "codes"))
    bpe = fastbpe.ApplyBpe(codes)
    with open(words, encoding="utf-8") as f, open(os.path.join(work, "applied.txt"), "w", encoding="utf-8") as out:
        out.writelines(bpe.line(line.rstrip("\n")) + "\n" for line in f)
    fastbpe.write_vocab(fastbpe.get_vocab([os.path.join(work, "applied.txt")]), os.path.join(work, "vocab"))
    data = os.path.join(work, "old")
    prepare.main(["--raw", os.path.join(work, "raw"), "--destdir", data, "--langs", "en,es", "--bpe", "authors",
                  "--codes", os.path.join(work, "codes"), "--vocab", os.path.join(work, "vocab")])
    return data


def random_checkpoint(data: str, path: str) -> str:
    """An xlm_tiny en/es checkpoint of ``data``'s dictionary, as training writes it (weights random)."""
    torch.manual_seed(1)
    model = factory.build_model("xlm_tiny", layout.load_dictionary(data), ["en", "es"])
    torch.save({"args": None, "cfg": {"model": {**asdict(model.cfg), "_name": "xlm_tiny"},
                                      "task": {"_name": "xlm_pretrain", "data": data, "langs": "en,es"}},
                "model": model.state_dict(), "extra_state": {"epoch": 1},
                "optimizer_history": [{"criterion_name": "xlm_lm", "optimizer_name": "adam",
                                       "lr_scheduler_state": {"best": None}, "num_updates": 0}]}, path)
    return path


def tokens_per_word(data: str, raw: str, name: str) -> float:
    _, sizes = read_tokens(os.path.join(data, name))
    with open(os.path.join(raw, name), encoding="utf-8") as f:
        lines = f.read().splitlines()
    return round(float(sizes.sum()) / (sum(len(line.split()) for line in lines) + len(lines)), 2)


def changed_lines(old: str, new: str, raw: str) -> tuple:
    """(en/es lines, lines whose ids through NEW's tokenizer and dictionary differ from OLD's binarized ids)."""
    bpe, dictionary = AuthorsBpe(os.path.join(new, "authors_bpe")), layout.load_dictionary(new)
    n = bad = 0
    for split in SPLITS:
        for lang in ("en", "es"):
            with open(os.path.join(raw, f"{split}.{lang}"), encoding="utf-8") as f:
                lines = f.read().splitlines()
            tokens, sizes = read_tokens(os.path.join(old, f"{split}.{lang}"))
            want = np.split(np.asarray(tokens, np.int64), np.cumsum(sizes)[:-1])
            for pieces, ref in zip(bpe.batch(lines, lang), want):
                n += 1
                bad += [dictionary.index(p) for p in pieces] + [dictionary.eos()] != ref.tolist()
    return n, bad


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--raw", required=True, help="recipes/add_language.sh's OUT/raw")
    p.add_argument("--merges", type=int, default=1000, help="codes of the en+es BPE")
    p.add_argument("--new-merges", type=int, default=1000, help="add_language --vocab-size")
    p.add_argument("--from-characters", action="store_true", help="learn the new merges from characters")
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as work:
        old = old_data_bin(args.raw, work, args.merges)
        ckpt = random_checkpoint(old, os.path.join(work, "checkpoint.pt"))
        out = {"ny_tokens_per_word_old_bpe": None, "en_tokens_per_word": tokens_per_word(old, args.raw, "test.en")}
        learn = fastbpe.learn_bpe
        patch = mock.patch.object(fastbpe, "learn_bpe", lambda paths, n, start=None: learn(paths, n)) \
            if args.from_characters else mock.patch.object(fastbpe, "learn_bpe", learn)
        for n in (0, args.new_merges):
            new = os.path.join(work, f"new{n}")
            start = time.process_time()
            with patch:
                assert add_language.main([ckpt, "--data-bin", old, "--raw", args.raw, "--langs", "ny", "--destdir",
                                          new, "--vocab-size", str(n)]) == 0
            seconds = time.process_time() - start
            if n == 0:
                out["ny_tokens_per_word_old_bpe"] = tokens_per_word(new, args.raw, "test.ny")
                continue
            record = json.load(open(os.path.join(new, "add_language.json"), encoding="utf-8"))
            lines, bad = changed_lines(old, new, args.raw)
            out.update(ny_tokens_per_word_grown=tokens_per_word(new, args.raw, "test.ny"), cpu_seconds=round(seconds, 1),
                       en_es_lines=lines, en_es_lines_with_other_ids=bad,
                       **{k: record[k] for k in ("old_vocab", "vocab", "merges_learned", "merges_appended", "new_pieces")})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
