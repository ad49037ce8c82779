"""fairseq_xlm.cli.add_language on real Bible text: an en/es model (bible_databin) grows by Chichewa (ny).

The old languages must tokenize to the same dictionary ids (every raw line of bible_raw, encoded by the old
and by the extended BPE), the extended model must give the old model's logits on the old vocabulary, train
with the old rows frozen for N updates (then not), and convert to HF with equal logits.
"""

import glob
import json
import os
import shutil
from dataclasses import asdict

import numpy as np
import pytest
import sentencepiece as spm
import torch

import fairseq_xlm  # noqa: F401  (registers models, installs safe loading)
from fairseq_xlm.cli import add_language
from fairseq_xlm.data import layout
from fairseq_xlm.formats import load_model
from fairseq_xlm.models import factory

pytestmark = pytest.mark.usefixtures("one_torch_thread")
transformers = pytest.importorskip("transformers")


def old_checkpoint(folder, data):
    """An xlm_tiny en/es checkpoint on ``data`` as training writes it (random weights, LayerNorms not identity)."""
    torch.manual_seed(5)
    model = factory.build_model("xlm_tiny", layout.load_dictionary(str(data)), ["en", "es"])
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.3)
    path = folder / "checkpoint_best.pt"
    torch.save({"args": None, "cfg": {"model": {**asdict(model.cfg), "_name": "xlm_tiny"},
                                      "task": {"_name": "xlm_pretrain", "data": str(data), "langs": "en,es",
                                               "mlm_steps": "en,es,en-es"}},
                "model": model.state_dict(), "extra_state": {"epoch": 1},
                "optimizer_history": [{"criterion_name": "xlm_lm", "optimizer_name": "adam",
                                       "lr_scheduler_state": {"best": 2.5}, "num_updates": 10}]}, path)
    return path, model.eval()


def grow_by_ny(tmp_path_factory, name, data, raw, vocab_size):
    """(old checkpoint, old model, the NEW folder) of add_language on the data-bin ``data`` ... --langs ny."""
    folder = tmp_path_factory.mktemp(name)
    ckpt, model = old_checkpoint(folder, data)
    new = folder / "new"
    assert add_language.main([str(ckpt), "--data-bin", str(data), "--raw", str(raw), "--langs", "ny",
                              "--destdir", str(new), "--vocab-size", str(vocab_size)]) == 0
    return ckpt, model, new


@pytest.fixture(scope="module")
def ny_raw(bible_ny_databin):
    return bible_ny_databin / "raw"


@pytest.fixture(scope="module")
def extended(bible_databin, ny_raw, tmp_path_factory):
    """(old checkpoint, old model, the NEW folder) of add_language ... --langs ny."""
    return grow_by_ny(tmp_path_factory, "add_language", bible_databin, ny_raw, 1000)


def dict_ids(sp, dictionary, lines):
    return [[dictionary.index(p) for p in pieces] for pieces in sp.encode(lines, out_type=str)]


def test_old_languages_keep_their_ids_and_logits(bible_databin, bible_raw, ny_raw, extended):
    ckpt, old_model, new = extended
    record = json.loads((new / "add_language.json").read_text())
    old_dict, new_dict = layout.load_dictionary(str(bible_databin)), layout.load_dictionary(str(new))
    old_sp = spm.SentencePieceProcessor(model_file=str(bible_databin / "spm.model"))
    new_sp = spm.SentencePieceProcessor(model_file=str(new / "spm.model"))
    assert record["old_vocab"] == len(old_dict) and len(new_dict) == record["vocab"] > len(old_dict)
    assert new_dict.symbols[: len(old_dict)] == old_dict.symbols  # <mask> included, at its old id
    assert [new_sp.id_to_piece(i) for i in range(old_sp.get_piece_size())] == \
        [old_sp.id_to_piece(i) for i in range(old_sp.get_piece_size())]

    # every old-language line of the real corpus: the same dictionary ids through the old and the new BPE
    files = sorted(p for p in glob.glob(str(bible_raw / "*.e[ns]")))
    assert len(files) == 12
    for path in files:
        lines = open(path, encoding="utf-8").read().splitlines()
        assert dict_ids(new_sp, new_dict, lines) == dict_ids(old_sp, old_dict, lines), path

    # ny: new pieces are used and shorten the text; its data-bin holds ids past the old vocabulary
    ny = open(ny_raw / "train.ny", encoding="utf-8").read().splitlines()
    old_len = sum(map(len, old_sp.encode(ny)))
    new_ids = [i for line in dict_ids(new_sp, new_dict, ny) for i in line]
    assert len(new_ids) < 0.8 * old_len
    assert sum(i >= len(old_dict) for i in new_ids) > 0.15 * len(new_ids)
    tokens = np.memmap(new / "train.ny.bin", dtype=np.uint16, mode="r")
    assert tokens.max() >= len(old_dict) and len(tokens) == len(new_ids) + len(ny)

    # the model: old rows untouched, so logits on the old vocabulary are the old model's exactly
    model = load_model(str(new / "checkpoint.pt"))
    assert model.encoder.embeddings.embed_langs.weight.shape[0] == 3
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, len(old_dict), (2, 9), generator=g)
    langs = torch.tensor([[0] * 9, [1] * 9])
    with torch.no_grad():
        want = old_model(tokens, langs=langs)[0]
        got = model.eval()(tokens, langs=langs)[0]
    assert got.shape[-1] == len(new_dict)
    assert torch.equal(got[..., : len(old_dict)], want)

    # --init mean: a word-initial new piece's row is the mean of the rows the old BPE splits its word into
    piece = next(p for p in new_dict.symbols[len(old_dict):] if p.startswith("\u2581") and len(p) > 3)
    parts = [old_dict.index(p) for p in old_sp.encode(piece[1:], out_type=str)]
    emb = model.encoder.embeddings.embed_tokens.weight
    assert torch.allclose(emb[new_dict.index(piece)], old_model.encoder.embeddings.embed_tokens.weight[parts].mean(0))
    # --lang-init mean: the mean of en and es
    lang = model.encoder.embeddings.embed_langs.weight
    assert torch.allclose(lang[2], lang[:2].mean(0))


def test_extended_checkpoint_trains_with_frozen_rows_and_converts(extended, bible_raw, ny_raw, pkg_dir, run_fairseq,
                                                                 tmp_path):
    _, _, new = extended
    old_vocab = json.loads((new / "add_language.json").read_text())["old_vocab"]
    run_fairseq("fairseq_cli.train", [
        new, "--user-dir", pkg_dir, "--task", "xlm_pretrain", "--langs", "en,es,ny", "--mlm-steps", "en,es,ny,en-es",
        "--arch", "xlm_tiny", "--criterion", "xlm_lm", "--optimizer", "adam", "--lr", "0.01",
        "--batch-size", "4", "--tokens-per-sample", "32", "--max-update", "3", "--freeze-old-embeddings", "2",
        "--restore-file", new / "checkpoint.pt", "--reset-optimizer", "--reset-dataloader", "--reset-meters",
        "--reset-lr-scheduler", "--save-dir", tmp_path, "--save-interval-updates", "1", "--no-epoch-checkpoints",
        "--disable-validation", "--cpu", "--num-workers", "0", "--seed", "1", "--log-format", "simple"])
    key = "encoder.embeddings.embed_tokens.weight"

    def rows(path):
        state = torch.load(path, map_location="cpu", weights_only=False)["model"]
        return state[key], state["encoder.output_bias"]

    start = rows(new / "checkpoint.pt")
    after = {n: rows(glob.glob(str(tmp_path / f"checkpoint_*_{n}.pt"))[0]) for n in (1, 2, 3)}
    for n in (1, 2):  # frozen: old rows bit-identical, new rows trained
        for before, now in zip(start, after[n]):
            assert torch.equal(now[:old_vocab], before[:old_vocab]), n
            assert not torch.equal(now[old_vocab:], before[old_vocab:]), n
    assert not torch.equal(after[3][0][:old_vocab], start[0][:old_vocab])  # update 3: they train

    # the trained, extended checkpoint converts to HF with equal logits
    from fairseq_xlm.cli import convert

    ckpt = tmp_path / "checkpoint_last.pt"
    assert convert.main(["fairseq-to-hf", str(ckpt), str(tmp_path / "hf"), "--dict", str(new / "dict.txt")]) == 0
    ours = load_model(str(ckpt), str(new)).eval()
    hf = transformers.XLMWithLMHeadModel.from_pretrained(tmp_path / "hf").eval()
    vocab = json.loads((tmp_path / "hf" / "vocab.json").read_text())
    words = [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    cols = torch.tensor([ours.encoder.dictionary.index(w) for w in words])
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(4, len(words), (2, 8), generator=g)
    langs = torch.tensor([[2] * 8, [0] * 8])
    with torch.no_grad():
        expected = hf(input_ids=ids, langs=langs).logits
        got = ours(cols[ids], langs=langs)[0][..., cols]
    assert (got - expected).abs().max().item() <= 1e-4

    # ... and its HF tokenizer (built from the extended spm.model) gives our ids on ny and on en text
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    sp = spm.SentencePieceProcessor(model_file=str(new / "spm.model"))
    for path in (ny_raw / "train.ny", bible_raw / "train.en"):
        lines = open(path, encoding="utf-8").read().splitlines()[:200]
        hf_ids = [cols[tok(line)["input_ids"][1:-1]].tolist() for line in lines]  # </s> s </s>, in our ids
        assert hf_ids == dict_ids(sp, ours.encoder.dictionary, lines), path


def run_error(capsys, *argv):
    assert add_language.main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fairseq_xlm.cli.add_language: error: ")
    return err[0]


def test_clear_errors(extended, bible_databin, bible_ny_databin, ny_raw, tmp_path, capsys):
    ckpt, _, new = extended
    common = ["--raw", ny_raw, "--destdir", tmp_path / "out"]
    # a language the checkpoint has
    err = run_error(capsys, ckpt, "--data-bin", bible_databin, "--langs", "es", *common)
    assert "['es'] already a language of" in err and "(en,es)" in err
    err = run_error(capsys, new / "checkpoint.pt", "--data-bin", new, "--langs", "ny", *common)
    assert "['ny'] already a language" in err
    # a BPE that is not the checkpoint's: the dictionary kept, another sentencepiece model beside it
    wrong = tmp_path / "wrong-bpe"
    shutil.copytree(bible_databin, wrong)
    shutil.copyfile(bible_ny_databin / "spm.model", wrong / "spm.model")
    err = run_error(capsys, ckpt, "--data-bin", wrong, "--langs", "ny", *common)
    assert f"{wrong / 'spm.model'} does not match the dictionary of {ckpt}" in err
    # ... a data-bin whose dictionary has another size
    short = tmp_path / "short-dict"
    shutil.copytree(bible_databin, short)
    lines = (short / "dict.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    (short / "dict.txt").write_text("".join(lines[:-1]), encoding="utf-8")
    err = run_error(capsys, ckpt, "--data-bin", short, "--langs", "ny", *common)
    assert "vocabulary of" in err and str(short / "dict.txt") in err
    # ... or the same size, other words (another data-bin than the one the checkpoint names)
    err = run_error(capsys, ckpt, "--data-bin", bible_ny_databin, "--langs", "ny", *common)
    assert f"{bible_ny_databin / 'dict.txt'} differs from {bible_databin / 'dict.txt'}" in err
    # text that yields no new pieces: the old data's own words
    raw = tmp_path / "raw"
    raw.mkdir()
    words = sorted({w for w in open(bible_databin / "dict.txt", encoding="utf-8").read().split()[::2]
                    if w.startswith("\u2581") and len(w) > 1})
    for split in ("train", "valid"):
        (raw / f"{split}.xx").write_text("\n".join(w[1:] for w in words) + "\n", encoding="utf-8")
    err = run_error(capsys, ckpt, "--data-bin", bible_databin, "--langs", "xx", "--raw", raw,
                    "--destdir", tmp_path / "out2", "--vocab-size", "100")
    assert f"--raw {raw / 'train.xx'}: yields no new pieces" in err
    assert not os.path.exists(tmp_path / "out") and not (tmp_path / "out2" / "checkpoint.pt").exists()
    # freezing needs a data-bin that add_language wrote
    from fairseq_xlm.tasks import frozen_rows

    with pytest.raises(ValueError, match=f"--freeze-old-embeddings: {bible_databin / 'add_language.json'} missing"):
        frozen_rows.build(str(bible_databin), 5)


def test_vocab_size_zero_is_the_old_bpe_with_a_language_row(extended, bible_databin, ny_raw, tmp_path):
    ckpt, old_model, _ = extended
    out = tmp_path / "noext"
    assert add_language.main([str(ckpt), "--data-bin", str(bible_databin), "--raw", str(ny_raw), "--langs", "ny",
                              "--destdir", str(out), "--vocab-size", "0", "--lang-init", "es"]) == 0
    for name in ("dict.txt", "spm.model", "train.en.bin", "valid.es.idx"):
        assert (out / name).read_bytes() == (bible_databin / name).read_bytes(), name
    model = load_model(str(out / "checkpoint.pt"))
    old_state = old_model.state_dict()
    for key, value in model.state_dict().items():
        if "embed_langs" not in key:
            assert torch.equal(value, old_state[key]), key
    lang = model.encoder.embeddings.embed_langs.weight
    assert torch.equal(lang[:2], old_state["encoder.embeddings.embed_langs.weight"]) and torch.equal(lang[2], lang[1])


def test_pair_set_and_reachability_by_hand():
    from fairseq_xlm.data import spm_extend

    symbols = ["a", "b", "c", "</s>"]
    stream = np.array([0, 1, 2, 3, 2, 0, 3, 1, 1])  # "a b c </s> c a </s> b b": pairs never cross </s>
    assert spm_extend.adjacent_concatenations(stream, 3, symbols) == {"ab", "bc", "ca", "bb"}
    assert spm_extend.adjacent_concatenations(stream, 3, symbols, chunk=2) == {"ab", "bc", "ca", "bb"}
    # "xyz" needs "xy" + "z" or "x" + "yz"; "q" is a character; "ab" re-segments old text, "abc" then is dead
    assert spm_extend.reachable(["xy", "xyz", "q", "yz"], {"x", "y", "z"}) == ["xy", "xyz", "q", "yz"]
    assert spm_extend.reachable(["xyz", "q"], {"x", "y"}) == ["q"]
    assert spm_extend.drop_conflicts(["ab", "abc", "ca"], {"ab"}, {"a", "b", "c"}) == ["ca"]


def test_study_report_by_hand(tmp_path):
    import contextlib

    from fairseq_xlm.cli import add_language_report
    from fairseq_xlm.cli.prepare_ids import TokenWriter

    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "test.ny").write_text("a b\nc\n", encoding="utf-8")  # 3 words + 2 </s>
    (tmp_path / "s1" / "ext").mkdir(parents=True)
    with contextlib.ExitStack() as stack:  # 7 tokens: 1.4 per word
        TokenWriter(stack, str(tmp_path / "s1" / "ext" / "test.ny"), np.uint16).add(np.arange(7), np.array([4, 3]))
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "ext-s1.log").write_text(
        "2026-01-01 | INFO | test | valid on 'test' subset | loss 3 | mlm_ppl_ny 8 | mlm_ppl_en 2 | wps 0\n")
    (tmp_path / "genre").mkdir()
    (tmp_path / "genre" / "table.md").write_text(
        "| model | en | es | ny | avg |\n|---|---:|---:|---:|---:|\n| ext-s1 | 50.0 | 40.0 | 30.5 | 40.2 |\n")
    text = add_language_report.report(str(tmp_path), ["1"], "x")
    row = next(line for line in text.splitlines() if line.startswith("| (ii)"))
    # ppl 8 = 3 bits per token, x 1.4 tokens per word; en has no test split here: no bits per word
    assert row == "| (ii) extended by add_language + CONT updates | 1 | 2.0 / – | – | 8.0 / 4.2 | 50.0 | 40.0 | 30.5 |"

    # seeds 1, 2 of (i) and (ii): mean ± std, and the ordering (ii) better than (i) paired over the seeds
    for arm, seed in (("ext", 2), ("noext", 1), ("noext", 2)):  # the same 1.4 tokens per word
        shutil.copytree(tmp_path / "s1" / "ext", tmp_path / f"s{seed}" / arm)
    for arm, seed, ppl in (("ext", 2, 4), ("noext", 1, 16), ("noext", 2, 16), ("pre", 1, 16), ("pre", 2, 16)):
        lang = "en" if arm == "pre" else "ny"
        (tmp_path / "eval" / f"{arm}-s{seed}.log").write_text(
            f"x | INFO | test | valid on 'test' subset | loss 3 | mlm_ppl_{lang} {ppl} | mlm_ppl_en {ppl} | wps 0\n")
    # en: the same 1.4 tokens per word in the old data-bin (pre) and in ext's
    shutil.copyfile(tmp_path / "raw" / "test.ny", tmp_path / "raw" / "test.en")
    (tmp_path / "old").mkdir()
    for folder in (tmp_path / "old", tmp_path / "s1" / "ext", tmp_path / "s2" / "ext"):
        for ext in ("bin", "idx"):
            shutil.copyfile(tmp_path / "s1" / "ext" / f"test.ny.{ext}", folder / f"test.en.{ext}")
    (tmp_path / "genre" / "table.md").write_text(
        "| model | en | es | ny | avg |\n|---|---:|---:|---:|---:|\n| ext-s1 | 50.0 | 40.0 | 30.5 | 40.2 |\n"
        "| ext-s2 | 50.0 | 40.0 | 32.5 | 40.2 |\n| noext-s1 | 50.0 | 40.0 | 28.5 | 40.2 |\n"
        "| noext-s2 | 50.0 | 40.0 | 29.5 | 40.2 |\n")
    text = add_language_report.report(str(tmp_path), ["1", "2"], "x")
    row = next(line for line in text.splitlines() if line.startswith("| (ii)"))
    assert row.endswith("| 2 | 3.0 ± 1.4 / 2.1 ± 1.0 | – | 6.0 ± 2.8 / 3.5 ± 1.0 | 50.0 ± 0.0 | 40.0 ± 0.0 | 31.5 ± 1.4 |")
    # accuracy: differences +2, +3 -> mean 2.5, sd 0.71, 95 % half width 12.706 * 0.5 = 6.35
    assert "- (ii) better than (i) on ny genre accuracy (higher is better): **holds in the means**; " \
        "ext vs noext: +2.50 [-3.85, 8.85], p=0.13" in text
    # bits per word: noext 4 x 1.4 = 5.6; ext 4.2, 2.8 -> differences 1.4, 2.8
    assert "- (ii) better than (i) on ny bits per word (lower is better): **holds in the means**; ext vs noext: " \
        "+2.10 [-6.79, 11.0], p=0.20" in text
    # the old languages' cost: en of ext 2 x 1.4, 2 x 1.4 (seed 1's ppl 2, seed 2's 4) minus pre's 4 x 1.4
    assert "- (ii) minus the model before: en -3.50 [-12.4, 5.39], p=0.13; es –" in text


def test_study_recipe_refuses_other_settings_in_the_same_out(tmp_path):
    """More seeds go into a study's OUT only with the settings its stamps were made with."""
    import subprocess

    recipe = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes", "add_language.sh")
    # FAIRSEQ_XLM_ENV_CHECKED: skip lib/env.sh's scan of every recipe (tested in test_recipes.py)
    env = {**os.environ, "OUT": str(tmp_path), "PRE_MAX_UPDATE": "1000", "FAIRSEQ_XLM_ENV_CHECKED": "1"}

    def run(**more):
        return subprocess.run(["bash", recipe, "--stage", "9", "--stop-stage", "0"], env={**env, **more},
                              capture_output=True, text=True, timeout=60)

    first = run()
    assert first.returncode == 0, first.stderr
    assert "pre=1000 cont=500" in (tmp_path / "settings").read_text()
    assert run(SEEDS="2,3").returncode == 0  # seeds are not a setting
    other = run(PRE_MAX_UPDATE="2000")
    assert other.returncode == 1 and f"error: {tmp_path} was made with other settings" in other.stderr
    assert "pre=2000" in other.stderr
