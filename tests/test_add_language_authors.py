"""fairseq_xlm.cli.add_language on a data-bin of the authors' BPE (fastBPE codes, ``prepare --bpe authors``):
an en/es model on real Bible text grows by Chichewa (ny).

The old data-bin is made once per module from bible_raw's monolingual en/es text: Moses words (sacremoses),
codes and vocabulary by the textbook learner of tests/authors_release.py, then ``prepare --bpe authors``. Every
one of its raw lines must give, through the grown tokenizer (HF's XLMTokenizer, as prepare runs it) and
dictionary, the ids the old data-bin holds.
"""

import json
import shutil

import numpy as np
import pytest
import torch

import fairseq_xlm  # noqa: F401  (registers models, installs safe loading)
from authors_release import learn_bpe, moses_words, write_codes_vocab
from fairseq_xlm.cli.prepare_ids import read_tokens
from fairseq_xlm.data import bpe_extend, layout
from fairseq_xlm.data.authors_bpe import AuthorsBpe
from fairseq_xlm.formats import load_model
from test_add_language import grow_by_ny, run_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")
pytest.importorskip("sacremoses")
MONO = [f"{split}.{lang}" for split in ("train", "valid", "test") for lang in ("en", "es")]


@pytest.fixture(scope="module")
def authors_old(bible_raw, tmp_path_factory):
    """An authors' BPE data-bin of bible_raw's mono en, es (600 merges learned on its training text, cased)."""
    from fairseq_xlm.cli import prepare

    out = tmp_path_factory.mktemp("authors_old")
    (out / "raw").mkdir()
    for path in MONO:
        (out / "raw" / path).symlink_to(bible_raw / path)
    words = [w for lang in ("en", "es")
             for w in moses_words((bible_raw / f"train.{lang}").read_text(encoding="utf-8").splitlines(), lang, False)]
    codes, vocab = write_codes_vocab(out / "bpe", *learn_bpe(words, 600))
    prepare.main(["--raw", str(out / "raw"), "--destdir", str(out / "bin"), "--langs", "en,es", "--bpe", "authors",
                  "--codes", str(codes), "--vocab", str(vocab)])
    return out / "bin"


@pytest.fixture(scope="module")
def authors_extended(authors_old, bible_ny_databin, tmp_path_factory):
    """(old checkpoint, old model, the NEW folder) of add_language on the authors' data-bin, --langs ny."""
    return grow_by_ny(tmp_path_factory, "add_language_authors", authors_old, bible_ny_databin / "raw", 400)


def ids(bpe, dictionary, lines, lang):
    return [[dictionary.index(p) for p in pieces] for pieces in bpe.batch(lines, lang)]


def test_old_languages_keep_their_ids_and_ny_gets_shorter(authors_old, authors_extended, bible_raw,
                                                          bible_ny_databin):
    ckpt, old_model, new = authors_extended
    record = json.loads((new / "add_language.json").read_text())
    assert record["bpe"] == "authors" and 0 < record["merges_appended"] < record["merges_learned"] == 400
    old_dict, new_dict = layout.load_dictionary(str(authors_old)), layout.load_dictionary(str(new))
    assert new_dict.symbols[: len(old_dict)] == old_dict.symbols and len(new_dict) == record["vocab"]
    old_codes = (authors_old / "authors_bpe" / "merges.txt").read_text(encoding="utf-8")
    assert (new / "authors_bpe" / "merges.txt").read_text(encoding="utf-8").startswith(old_codes)
    old_bpe, new_bpe = AuthorsBpe(str(authors_old / "authors_bpe")), AuthorsBpe(str(new / "authors_bpe"))

    # every old-language line of the real corpus: through the grown BPE, the ids the old data-bin holds
    for name in MONO:
        lines = (bible_raw / name).read_text(encoding="utf-8").splitlines()
        tokens, sizes = read_tokens(str(authors_old / name))
        assert len(sizes) == len(lines) and sizes.sum() > 10 * len(lines)
        want = np.split(np.asarray(tokens, np.int64), np.cumsum(sizes)[:-1])
        got = ids(new_bpe, new_dict, lines, name.split(".")[1])
        assert [line + [new_dict.eos()] for line in got] == [w.tolist() for w in want], name

    # ny: fewer tokens per word through the grown BPE (its data-bin), new words used
    ny = (bible_ny_databin / "raw" / "train.ny").read_text(encoding="utf-8").splitlines()
    old_n = sum(map(len, ids(old_bpe, old_dict, ny, "ny")))
    tokens, sizes = read_tokens(str(new / "train.ny"))
    assert len(sizes) == len(ny) and tokens.max() >= len(old_dict)
    assert len(tokens) - len(ny) < 0.85 * old_n  # (</s> once per line)
    assert np.sum(tokens >= len(old_dict)) > 0.1 * len(tokens)

    # the model: logits on the old vocabulary unchanged; a new word-final piece's row is the mean of the rows
    # of the pieces HF's XLMTokenizer splits it into with the old codes (an independent oracle of the split)
    model = load_model(str(new / "checkpoint.pt")).eval()
    g = torch.Generator().manual_seed(0)
    batch, langs = torch.randint(4, len(old_dict), (2, 9), generator=g), torch.tensor([[0] * 9, [1] * 9])
    with torch.no_grad():
        got, want = model(batch, langs=langs)[0], old_model(batch, langs=langs)[0]
    assert got.shape[-1] == len(new_dict) and torch.equal(got[..., : len(old_dict)], want)
    piece = next(p for p in new_dict.symbols[len(old_dict):] if not p.endswith("@@") and len(p) > 3)
    split = old_bpe.tokenizer.bpe(piece).split(" ")
    parts = [old_dict.index(s[:-4] if s.endswith("</w>") else s + "@@") for s in split]
    assert len(parts) > 1 and old_dict.unk() not in parts
    emb = model.encoder.embeddings.embed_tokens.weight
    assert torch.allclose(emb[new_dict.index(piece)], old_model.encoder.embeddings.embed_tokens.weight[parts].mean(0))


def test_grown_checkpoint_converts_to_hf(authors_extended, tmp_path):
    """HF's XLMWithLMHeadModel of the grown checkpoint gives its logits, new words and ny's language included."""
    transformers = pytest.importorskip("transformers")
    from fairseq_xlm.cli import convert

    _, _, new = authors_extended
    assert convert.main(["fairseq-to-hf", str(new / "checkpoint.pt"), str(tmp_path / "hf"), "--dict",
                         str(new / "dict.txt")]) == 0
    ours = load_model(str(new / "checkpoint.pt"), str(new)).eval()
    hf = transformers.XLMWithLMHeadModel.from_pretrained(tmp_path / "hf").eval()
    vocab = json.loads((tmp_path / "hf" / "vocab.json").read_text(encoding="utf-8"))
    words = [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    cols = torch.tensor([ours.encoder.dictionary.index(w) for w in words])
    ids = torch.randint(4, len(words), (2, 8), generator=torch.Generator().manual_seed(2))
    langs = torch.tensor([[2] * 8, [0] * 8])
    with torch.no_grad():
        expected = hf(input_ids=ids, langs=langs).logits
        got = ours(cols[ids], langs=langs)[0][..., cols]
    assert len(words) == len(ours.encoder.dictionary) and (got - expected).abs().max().item() <= 1e-4


def test_authors_errors(authors_old, authors_extended, bible_databin, bible_raw, bible_ny_databin, tmp_path, capsys):
    ckpt, _, _ = authors_extended
    common = ["--raw", bible_ny_databin / "raw", "--langs", "ny", "--destdir", tmp_path / "out"]
    # a vocabulary that is not the checkpoint's dictionary
    wrong = tmp_path / "wrong-vocab"
    shutil.copytree(authors_old, wrong)
    vocab = json.loads((wrong / "authors_bpe" / "vocab.json").read_text(encoding="utf-8"))
    vocab.pop(next(w for w in vocab if w.endswith("</w>") and len(w) > 6))
    (wrong / "authors_bpe" / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    err = run_error(capsys, ckpt, "--data-bin", wrong, *common)
    assert f"{wrong / 'authors_bpe' / 'vocab.json'} does not match the dictionary of {ckpt}" in err
    # codes of another BPE run than the vocabulary
    shutil.copytree(authors_old, tmp_path / "wrong-codes")
    merges = tmp_path / "wrong-codes" / "authors_bpe" / "merges.txt"
    merges.write_text("".join(merges.read_text(encoding="utf-8").splitlines(keepends=True)[:50]), encoding="utf-8")
    err = run_error(capsys, ckpt, "--data-bin", tmp_path / "wrong-codes", *common)
    assert f"{merges}:" in err and "are made by no merge in it" in err
    # text that yields no new pieces: the old training text itself (its merges cannot fire on it)
    raw = tmp_path / "raw"
    raw.mkdir()
    lines = (bible_raw / "train.en").read_text(encoding="utf-8").splitlines(keepends=True)[:100]
    for split in ("train", "valid"):
        (raw / f"{split}.xx").write_text("".join(lines), encoding="utf-8")
    err = run_error(capsys, ckpt, "--data-bin", authors_old, "--raw", raw, "--langs", "xx", "--destdir",
                    tmp_path / "out2", "--vocab-size", "50")
    assert f"--raw {raw / 'train.xx'}: yields no new pieces" in err
    # --pretokenized belongs to the authors' BPE
    err = run_error(capsys, ckpt, "--data-bin", bible_databin, *common, "--pretokenized")
    assert "--pretokenized: only with a data-bin of the authors' BPE" in err


def test_merge_filter_and_splits_by_hand():
    # old codes: t+h, th+e</w>; the old corpus segments "the", "that" as [the] and [th, a, t</w>]
    old = [("t", "h", 9), ("th", "e</w>", 8)]
    symbols = ["<s>", "<pad>", "</s>", "<unk>", "the", "th@@", "a@@", "t", "q@@", "x"]
    eos, unk = 2, 3
    # "the </s> th@@ a@@ t </s> q@@ <unk> x": pairs inside words only; an <unk> after q@@, before x
    stream = np.array([4, 2, 5, 6, 7, 2, 8, 3, 9])
    pairs, left, right = bpe_extend.final_pairs(stream, eos, unk, symbols)
    assert pairs == {("th", "a"), ("a", "t</w>")} and left == {"q"} and right == {"x</w>"}
    new = [("t", "h", 5), ("a", "t</w>", 4), ("th", "a", 3), ("n", "g", 3), ("ng", "a</w>", 2), ("q", "i", 2),
           ("i", "x</w>", 2), ("tha", "n</w>", 2), ("thi", "s</w>", 1), ("th", "i", 1), ("z", "o", 1), ("z", "o", 1)]
    kept = bpe_extend.drop_conflicts(new, old, pairs, left, right)
    # t h: already a code; "a t</w>", "th a": adjacent in old words; "q i" / "i x</w>": next to an <unk>;
    # "tha n</w>": tha only came from "th a", so it is dead; "thi s</w>" stays (th i, ranked after it, makes thi:
    # merges fire by rank whatever made their parts); "z o" learned twice is appended once
    assert kept == [("n", "g", 3), ("ng", "a</w>", 2), ("thi", "s</w>", 1), ("th", "i", 1), ("z", "o", 1)]
    rank = bpe_extend.ranks(old + kept)
    assert bpe_extend.segment_word("nga", rank) == ["nga"] and bpe_extend.segment_word("that", rank) == \
        ["th@@", "a@@", "t"] and bpe_extend.segment_word("this", rank) == ["this"]
    old_rank = bpe_extend.ranks(old)
    assert bpe_extend.split_piece("nga", old_rank) == ["n@@", "g@@", "a"]
    assert bpe_extend.split_piece("the", old_rank) == ["the"]
    assert bpe_extend.split_piece("the@@", old_rank) == ["th@@", "e@@"]  # not word-final: th+e</w> cannot fire
    assert bpe_extend.token_counts({"nga": 2, "the": 3}, rank) == {"nga": 2, "the": 3}



def test_grown_data_bin_loads_and_scores_ny(authors_extended):
    """xlm_pretrain loads the grown data-bin (its load-time checks: manifest, dictionary, ids) and the grown
    model scores its ny validation blocks (new ids, the new language row) with a finite MLM loss."""
    from fairseq_xlm.criterions.xlm_lm import XlmLmCriterion
    from fairseq_xlm.tasks.xlm_pretrain import XlmPretrainConfig, XlmPretrainTask

    _, _, new = authors_extended
    task = XlmPretrainTask.setup_task(XlmPretrainConfig(data=str(new), langs="en,es,ny", mlm_steps="en,ny", seed=1,
                                                        tokens_per_sample=32))
    task.load_dataset("valid")
    model, criterion = load_model(str(new / "checkpoint.pt"), str(new)), XlmLmCriterion(task)
    batches = task.get_batch_iterator(task.dataset("valid"), max_sentences=8).next_epoch_itr(shuffle=False)
    sample = next(b for b in batches if b["step"] == "mlm_ny")
    assert sample["net_input"]["src_tokens"].max() >= json.loads((new / "add_language.json").read_text())["old_vocab"]
    loss, _, log = task.valid_step(sample, model, criterion)
    assert torch.isfinite(loss) and loss > 0 and log["mlm_ny:n"] > 0 and log["mlm_en:n"] == 0


def test_grown_checkpoint_continues_pretraining_with_fairseq_train(authors_extended, pkg_dir, run_fairseq, tmp_path):
    """fairseq-train continues pretraining from the grown checkpoint on the grown authors'-BPE data-bin (en, es,
    ny steps), old rows frozen for the first update: the new rows move at once, the old ones only after."""
    _, _, new = authors_extended
    old_vocab = json.loads((new / "add_language.json").read_text())["old_vocab"]
    run_fairseq("fairseq_cli.train", [
        new, "--user-dir", pkg_dir, "--task", "xlm_pretrain", "--langs", "en,es,ny", "--mlm-steps", "en,es,ny",
        "--arch", "xlm_tiny", "--criterion", "xlm_lm", "--optimizer", "adam", "--lr", "0.01", "--batch-size", "4",
        "--tokens-per-sample", "32", "--max-update", "4", "--freeze-old-embeddings", "3",
        "--restore-file", new / "checkpoint.pt", "--reset-optimizer", "--reset-dataloader", "--reset-meters",
        "--reset-lr-scheduler", "--save-dir", tmp_path, "--save-interval-updates", "3", "--no-epoch-checkpoints",
        "--disable-validation", "--cpu", "--num-workers", "0", "--seed", "1", "--log-format", "simple"])
    key = "encoder.embeddings.embed_tokens.weight"

    def rows(name):
        return torch.load(tmp_path / name if name != "start" else new / "checkpoint.pt", map_location="cpu",
                          weights_only=False)["model"][key]

    start, frozen, last = rows("start"), rows("checkpoint_1_3.pt"), rows("checkpoint_last.pt")
    assert torch.equal(frozen[:old_vocab], start[:old_vocab])  # updates 1-3 (one per step): old rows frozen
    assert not torch.equal(frozen[old_vocab:], start[old_vocab:])  # the appended words trained
    assert not torch.equal(last[:old_vocab], start[:old_vocab])  # update 4: the old rows train too
    assert torch.isfinite(last).all()
