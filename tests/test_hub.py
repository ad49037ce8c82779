"""Trained models used from Python and from fairseq-interactive, on checkpoints trained here for a few updates.

Oracles: the hub's ids of raw text equal the data-bin's (prepare binarized the same text); its features equal
the model's forward on those ids; embed_sentences' pooling equals each sentence's own features without padding;
fill_mask's top-1 is the argmax of the model's logits at the mask; translate() and fairseq-interactive
give fairseq-generate's hypotheses on the same test sentences.
"""

import math
import os
import subprocess

import preload
import pytest
import torch

import fairseq_xlm  # noqa: F401  (registers models, tasks; safe checkpoint loading)
from fairseq.data import data_utils
from fairseq_xlm.data import layout
from fairseq_xlm.models.xlm_mt import XlmMtModel
from fairseq_xlm.models.xlm_transformer import XlmModel

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
N_TRANSLATE = 12  # test sentences translated three ways
GEN = ["--beam", "2", "--max-len-a", "0", "--max-len-b", "8"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(bible_databin, pkg_dir, run_fairseq, tmp_path_factory):
    """(pretraining dir, MT dir): xlm_tiny MLM+TLM for 2 updates, then xlm_mt_tiny AE+MT for 12 updates."""
    tmp = tmp_path_factory.mktemp("hub")
    common = ["--user-dir", pkg_dir, "--cpu", "--num-workers", "0", "--optimizer", "adam", "--lr", "1e-3",
              "--no-epoch-checkpoints", "--seed", "3", "--disable-validation", "--dropout", "0",
              "--attention-dropout", "0"]
    pre, mt = tmp / "pre", tmp / "mt"
    run_fairseq("fairseq_cli.train", [
        bible_databin, "--task", "xlm_pretrain", "--langs", "en,es", "--mlm-steps", "en,es,en-es",
        "--criterion", "xlm_lm", "--arch", "xlm_tiny", "--max-tokens", "1000", "--tokens-per-sample", "64",
        "--max-update", "2", "--save-dir", pre, *common], env=ONE_THREAD)
    run_fairseq("fairseq_cli.train", [
        bible_databin, "--task", "unsupervised_mt", "--langs", "en,es", "--ae-steps", "en,es",
        "--mt-steps", "en-es", "--arch", "xlm_mt_tiny", "--pretrained-xlm-checkpoint", pre / "checkpoint_last.pt",
        "--criterion", "label_smoothed_cross_entropy", "--max-tokens", "500", "--max-update", "12",
        "--save-dir", mt, *common], env=ONE_THREAD)
    return pre, mt


@pytest.fixture(scope="module")
def xlm(trained, bible_databin):
    return XlmModel.from_pretrained(trained[0], "checkpoint_last.pt", data_name_or_path=str(bible_databin))


def test_encode_gives_the_data_bin_ids_and_decode_the_text(xlm, bible_databin, bible_raw):
    lines = (bible_raw / "test.es").read_text(encoding="utf-8").splitlines()
    binarized = data_utils.load_indexed_dataset(str(bible_databin / "test.es"), xlm.dictionary)
    assert len(lines) == len(binarized) == 80
    eos = xlm.dictionary.eos()
    for line, ids in zip(lines, binarized):
        tokens = xlm.encode(line, "es")
        assert tokens[0] == eos and tokens.tolist()[1:] == ids.tolist()  # `</s> s </s>`
        if xlm.dictionary.unk() not in tokens:
            assert xlm.decode(tokens) == " ".join(line.split())
    assert xlm.langs == ["en", "es"]


def test_extract_features_equal_the_models_forward(xlm):
    tokens = xlm.encode("In the beginning God created the heavens and the earth.", "en")
    langs = torch.zeros_like(tokens).unsqueeze(0)  # en is language 0 of --langs en,es
    expected, extra = xlm.model.encoder.extract_features(tokens.unsqueeze(0), langs=langs, return_all_hiddens=True)
    assert torch.equal(xlm.extract_features(tokens, "en"), expected)
    states = xlm.extract_features(tokens, "en", return_all_hiddens=True)
    assert len(states) == 3 and torch.equal(states[-1], expected)  # embeddings + 2 layers
    # the language matters: es ids give other states
    assert not torch.allclose(xlm.extract_features(tokens, "es"), expected)


def test_embed_sentences_pool_without_padding(xlm, bible_raw):
    lines = (bible_raw / "test.en").read_text(encoding="utf-8").splitlines()[:7]
    out = xlm.embed_sentences(lines, "en", layer=1, batch_size=3)  # batches padded to their longest
    assert out["first"].shape == out["mean"].shape == (7, 64)
    for i, line in enumerate(lines):
        states = xlm.extract_features(xlm.encode(line, "en"), "en", return_all_hiddens=True)[1][0]
        torch.testing.assert_close(out["first"][i], states[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out["mean"][i], states.mean(0), rtol=1e-5, atol=1e-5)


def test_fill_mask_top1_is_the_argmax_of_the_logits_at_the_mask(xlm, bible_databin):
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(bible_databin / "spm.model"))
    text = "And God said, Let there be <mask> and there was light."
    left, right = text.split("<mask>")
    d = xlm.dictionary
    ids = ([d.eos()] + [d.index(p) for p in sp.encode(left.strip(), out_type=str)] + [d.index(layout.MASK)]
           + [d.index(p) for p in sp.encode(right.strip(), out_type=str)] + [d.eos()])
    tokens = torch.tensor([ids])
    logits, _ = xlm.model(tokens, langs=torch.zeros_like(tokens))
    probs = logits[0, ids.index(d.index(layout.MASK))].softmax(-1)
    text_ids = [i for i, sym in enumerate(d.symbols) if i >= d.nspecial and sym != layout.MASK]
    best = text_ids[int(probs[text_ids].argmax())]  # the best text piece: special symbols are never fillers
    results = xlm.fill_mask(text, "en", topk=3)
    assert len(results) == 3 and [r[1] for r in results] == sorted([r[1] for r in results], reverse=True)
    filled, prob, filler = results[0]
    assert prob == pytest.approx(float(probs[best]), rel=1e-5)
    assert filler == d[best].replace("\u2581", " ").strip()
    assert filled.startswith("And God said, Let there be ") and filled.endswith(" and there was light.")


def test_fill_mask_never_proposes_a_special_symbol(xlm):
    """Issue 28: `</s>` was proposed as a filler. Every symbol ranked: none of the specials is among them."""
    d = xlm.dictionary
    results = xlm.fill_mask("In the beginning God created the <mask>.", "en", topk=len(d))
    specials = {d[i] for i in range(d.nspecial)} | {layout.MASK}
    fillers = [filler for _, _, filler in results]
    assert len(fillers) == len(d) - len(specials) and not specials & set(fillers)
    assert sum(p for _, p, _ in results) < 1.0  # the model's probabilities, not renormalised


def test_translate_of_blank_input_is_empty(trained, bible_databin):
    """Issue 28: translate([""]) returned a sentence. Blank lines give "", the others their own translation."""
    hub = XlmMtModel.from_pretrained(trained[1], "checkpoint_last.pt", data_name_or_path=str(bible_databin))
    sentence = "In the beginning God created the heavens and the earth."
    alone = hub.translate(sentence, "en", "es", beam=1, max_len_a=0, max_len_b=8)
    assert alone.strip()
    assert hub.translate(["", sentence, " \t "], "en", "es", beam=1, max_len_a=0, max_len_b=8) == ["", alone, ""]
    assert hub.translate("", "en", "es") == "" and hub.translate(["  "], "en", "es") == [""]
    with pytest.raises(ValueError, match="fr is not one of the languages"):
        hub.translate([""], "en", "fr")  # the direction is still checked


def test_bad_input_gives_one_clear_error(xlm, trained, bible_databin, tmp_path):
    pre, mt = trained
    with pytest.raises(FileNotFoundError, match="dict.txt or spm.model.*data_name_or_path"):
        XlmModel.from_pretrained(pre)  # the checkpoint folder holds no data-bin files
    with pytest.raises(FileNotFoundError, match="none of checkpoint_best.pt"):
        XlmModel.from_pretrained(tmp_path, data_name_or_path=str(bible_databin))
    with pytest.raises(ValueError, match="'fr' is not one of the model's languages en,es"):
        xlm.encode("bonjour", "fr")
    with pytest.raises(ValueError, match="exactly one <mask>"):
        xlm.fill_mask("no mask here", "en")
    with pytest.raises(ValueError, match="exactly one <mask>"):
        xlm.fill_mask("<mask> and <mask>", "en")
    with pytest.raises(ValueError, match="non-empty list"):
        xlm.embed_sentences([], "en")
    with pytest.raises(ValueError, match="use XlmMtModel.from_pretrained"):
        XlmModel.from_pretrained(mt, "checkpoint_last.pt", data_name_or_path=str(bible_databin))
    with pytest.raises(ValueError, match="not an xlm_mt checkpoint.*umt.sh"):
        XlmMtModel.from_pretrained(pre, "checkpoint_last.pt", data_name_or_path=str(bible_databin))
    hub = XlmMtModel.from_pretrained(mt, "checkpoint_last.pt", data_name_or_path=str(bible_databin))
    with pytest.raises(ValueError, match="non-empty list"):
        hub.translate([], "en", "es")
    with pytest.raises(ValueError, match="fr is not one of the languages en,es"):
        hub.translate(["hello"], "en", "fr")


def _generate_hypotheses(stdout: str, n: int):
    """fairseq-generate's / fairseq-interactive's (score, detokenized hypothesis) of D- lines, in input order."""
    hyps = {}
    for line in stdout.splitlines():
        if line.startswith("D-"):
            key, score, text = line.split("\t")
            hyps[int(key[2:])] = (float(score), text)
    assert sorted(hyps) == list(range(n))
    return [hyps[i] for i in range(n)]


def test_translate_and_interactive_equal_fairseq_generate(trained, bible_databin, bible_raw, pkg_dir, run_fairseq):
    _, mt = trained
    # fairseq-generate on the binarized test pairs (references unused), the first N_TRANSLATE sentences
    gen = run_fairseq("fairseq_cli.generate", [
        bible_databin, "--user-dir", pkg_dir, "--task", "unsupervised_mt", "--source-lang", "en", "--target-lang",
        "es", "--path", mt / "checkpoint_last.pt", *GEN, "--cpu", "--num-workers", "0", "--max-tokens", "4000",
        "--post-process", "sentencepiece"], env=ONE_THREAD)
    expected = _generate_hypotheses(gen.stdout, 60)[:N_TRANSLATE]
    # A few updates do not translate, but the scores depend on each input: equal scores prove equal inputs
    assert len({round(score, 4) for score, _ in expected}) > N_TRANSLATE // 2
    sources = (bible_raw / "test.en-es.en").read_text(encoding="utf-8").splitlines()[:N_TRANSLATE]

    hub = XlmMtModel.from_pretrained(mt, "checkpoint_last.pt", data_name_or_path=str(bible_databin))
    assert hub.translate(sources, "en", "es", beam=2, max_len_a=0, max_len_b=8) == [t for _, t in expected]
    assert hub.translate(sources[3], "en", "es", beam=2, max_len_a=0, max_len_b=8) == expected[3][1]
    assert hub.task.direction is None  # the direction was for that call only
    hypos = hub.generate([hub.encode(s) for s in sources], beam=2, max_len_a=0, max_len_b=8, src="en", tgt="es")
    # fairseq-generate prints scores in base 2
    assert [h[0]["score"].item() / math.log(2) for h in hypos] == pytest.approx([s for s, _ in expected], abs=1e-4)
    # the other direction reads the sources as Spanish and writes English: other scores
    back = hub.generate([hub.encode(s) for s in sources], beam=2, max_len_a=0, max_len_b=8, src="es", tgt="en")
    assert [h[0]["score"].item() / math.log(2) for h in back] != pytest.approx([s for s, _ in expected], abs=1e-4)

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pkg_dir.parent), os.environ.get("PYTHONPATH", "")]),
               **ONE_THREAD)
    cmd = [preload.python(), "-m", "fairseq_cli.interactive", str(bible_databin), "--user-dir", str(pkg_dir),
           "--task", "unsupervised_mt", "--path", str(mt / "checkpoint_last.pt"), "--bpe", "sentencepiece",
           "--sentencepiece-model", str(bible_databin / "spm.model"), *GEN, "--cpu", "--buffer-size", "5",
           "--batch-size", "5"]
    direction = ["--source-lang", "en", "--target-lang", "es"]
    proc = subprocess.run(cmd + direction, input="\n".join(sources) + "\n", env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = _generate_hypotheses(proc.stdout, N_TRANSLATE)
    assert [t for _, t in got] == [t for _, t in expected]
    assert [s for s, _ in got] == pytest.approx([s for s, _ in expected], abs=1e-4)

    # without a direction: one clear error, not fairseq's NotImplementedError
    bad = subprocess.run(cmd, input="hello\n", env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "give --source-lang and --target-lang" in bad.stderr

    # issue 28: without --bpe the raw text became <unk>s and was "translated" silently; now one line naming
    # the data-bin's model
    no_bpe = [a for a in cmd if a not in ("--bpe", "sentencepiece", "--sentencepiece-model",
                                          str(bible_databin / "spm.model"))]
    bad = subprocess.run(no_bpe + direction, input="\n".join(sources[:2]) + "\n", env=env, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and not any(
        line.startswith("H-") for line in bad.stdout.splitlines()), bad.stderr[-2000:]
    assert bad.stderr.strip().splitlines()[-1].endswith(
        f"pass --bpe sentencepiece --sentencepiece-model {bible_databin / 'spm.model'} (the data-bin's model)")
