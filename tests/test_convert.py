"""fairseq_xlm.cli.convert against an independent oracle (HF XLMWithLMHeadModel), plus refused input.

A randomly initialised HF model is saved to disk, converted, and our XlmModel must give the same logits
(tokens mapped between the two vocabularies by symbol, through vocab.json and dict.txt). The authors'
format is built from the same weights. fairseq -> HF -> fairseq must be bit-identical.
"""

import argparse
import json
import os
import pickle
import subprocess
from dataclasses import asdict

import numpy as np
import preload
import pytest
import torch

import fairseq_xlm  # noqa: F401  (registers models, installs safe loading)
from fairseq import checkpoint_utils, options
from omegaconf import OmegaConf
from fairseq_xlm import formats
from fairseq_xlm.cli import convert
from fairseq_xlm.data import layout
from fairseq_xlm.models import factory
from fairseq_xlm.safe_load import CheckpointLoadError

transformers = pytest.importorskip("transformers")

V = 50
LANGS = ["en", "fr", "de"]
HF_PAD = 2
WORDS = ["<s>", "</s>", "<pad>", "<unk>"] + [f"<special{i}>" for i in range(10)] + [f"w{i}</w>" for i in range(V - 14)]
TOL = 1e-4
MEASURED = {}


def run_cli(*args):
    return subprocess.run([preload.python(), "-m", "fairseq_xlm.cli.convert", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def error_lines(stderr: str):
    """stderr without fairseq's import-time INFO chatter."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("INFO:")]


def make_hf(path, seed=0, **overrides):
    """A random small HF XLMWithLMHeadModel saved with save_pretrained + vocab.json, reloaded from disk."""
    torch.manual_seed(seed)
    config = transformers.XLMConfig(
        vocab_size=V, emb_dim=32, n_layers=2, n_heads=4, n_langs=3, use_lang_emb=True,
        max_position_embeddings=24, lang2id={l: i for i, l in enumerate(LANGS)},
        id2lang={i: l for i, l in enumerate(LANGS)}, **overrides,
    )
    model = transformers.XLMWithLMHeadModel(config)
    with torch.no_grad():  # LayerNorm = identity and bias = 0 at init would hide swapped parameters
        for name, param in model.named_parameters():
            if not (config.sinusoidal_embeddings and "position_embeddings" in name):
                param.add_(torch.randn_like(param) * 0.3)
    model.save_pretrained(path)
    with open(path / "vocab.json", "w") as f:
        json.dump({w: i for i, w in enumerate(WORDS)}, f)
    return transformers.XLMWithLMHeadModel.from_pretrained(path).eval()


def hf_batch(n_langs=3):
    """A right-padded batch in HF ids (with <s>, </s>, <unk> and the mask inside) and per-token languages."""
    g = torch.Generator().manual_seed(1)
    ids = torch.full((3, 9), HF_PAD)
    for b, n in enumerate([9, 6, 3]):
        ids[b, :n] = torch.randint(3, V, (n,), generator=g)
        ids[b, 0] = 1
    ids[0, 4], ids[1, 2], ids[1, 3] = 0, 3, 5
    return ids, torch.randint(0, n_langs, ids.shape, generator=g)


def column_map(dictionary):
    """fairseq id of every HF id, looked up by symbol (the authors' mask <special1> is our <mask>)."""
    out = []
    for word in WORDS:
        word = "<mask>" if word == "<special1>" else word
        idx = dictionary.index(word)
        assert dictionary[idx] == word
        out.append(idx)
    return torch.tensor(out)


def max_diff(hf, ours, ids, hf_langs, our_langs, causal=False):
    """max |logit difference| at non-pad positions, columns compared by symbol."""
    cols = column_map(ours.encoder.dictionary)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=(ids != HF_PAD).long(), langs=hf_langs).logits
        got = ours(cols[ids], langs=our_langs, causal=causal)[0][..., cols]
    keep = ids != HF_PAD
    assert got.shape == expected.shape
    return (got - expected)[keep].abs().max().item()


def test_help_lists_subcommands():
    out = run_cli("--help")
    assert out.returncode == 0
    for sub in ("xlm-to-fairseq", "hf-to-fairseq", "fairseq-to-hf"):
        assert sub in out.stdout


@pytest.mark.parametrize("variant", ["learned", "sinusoidal", "causal"])
def test_hf_to_fairseq_matches_hf_logits(tmp_path, variant):
    kw = {"sinusoidal_embeddings": variant == "sinusoidal", "causal": variant == "causal"}
    hf = make_hf(tmp_path / "hf", **kw)
    out = tmp_path / "out"
    if variant == "learned":  # once through the real command line
        res = run_cli("hf-to-fairseq", tmp_path / "hf", out)
        assert res.returncode == 0, res.stderr
    else:
        assert convert.main(["hf-to-fairseq", str(tmp_path / "hf"), str(out)]) == 0
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "dict.txt"]
    assert len(layout.load_dictionary(str(out))) == V  # <mask> found, not appended
    lines = (out / "dict.txt").read_text().splitlines()
    assert lines[0].split()[0] == "<special0>" and lines[1].split()[0] == "<mask>" and len(lines) == V - 4

    model = formats.load_model(str(out / "checkpoint.pt")).eval()
    assert model.encoder.embeddings.embed_langs.weight.shape == (3, 32)
    ids, langs = hf_batch()
    diff = max_diff(hf, model, ids, langs, langs, causal=variant == "causal")
    MEASURED[f"hf-to-fairseq {variant}"] = diff
    print(f"max |dlogit| hf-to-fairseq {variant}: {diff:.2e}")
    assert diff <= TOL
    if variant == "causal":  # the oracle really is causal: bidirectional logits differ
        assert max_diff(hf, model, ids, langs, langs, causal=False) > 1e-2
        assert torch.load(out / "checkpoint.pt", weights_only=True)["extra_state"]["xlm_convert"]["causal"]

    if variant != "sinusoidal":  # fairseq's own loader rebuilds the xlm_pretrain task from cfg.task
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(out / "checkpoint.pt")])
        assert cfg.model._name == "xlm_transformer" and task.langs == LANGS and len(task.dictionary) == V
        assert task.steps["clm" if variant == "causal" else "mlm"] == [(lang, None) for lang in LANGS]
        assert max_diff(hf, models[0].eval(), ids, langs, langs, causal=variant == "causal") <= TOL


def authors_checkpoint(hf, path):
    """The authors' released layout, built from the HF model's weights (DataParallel 'module.' prefix)."""
    model = {}
    for key, value in hf.state_dict().items():
        model["module." + key.removeprefix("transformer.")] = value.clone()
    params = argparse.Namespace(
        emb_dim=32, n_layers=2, n_heads=4, n_langs=3, n_words=V, lang2id={l: i for i, l in enumerate(LANGS)},
        id2lang=dict(enumerate(LANGS)), gelu_activation=True, sinusoidal_embeddings=False,
        dropout=0.1, attention_dropout=0.1, use_lang_emb=True, asm=False, mask_index=5,
        mlm_steps=[("en", None), ("fr", None)], clm_steps=[], mask_scores=np.ones(V), lambda_mlm="1",
    )
    torch.save({"model": model, "dico_id2word": dict(enumerate(WORDS)),
                "dico_word2id": {w: i for i, w in enumerate(WORDS)},
                "dico_counts": {w: 1000 - i for i, w in enumerate(WORDS)}, "params": params, "epoch": 7}, path,
               _use_new_zipfile_serialization=False)  # the 2019 releases predate torch's zip format


def test_authors_checkpoint_matches_hf_logits(tmp_path):
    hf = make_hf(tmp_path / "hf", seed=3)
    authors_checkpoint(hf, tmp_path / "mlm.pth")
    assert convert.main(["xlm-to-fairseq", str(tmp_path / "mlm.pth"), str(tmp_path / "out")]) == 0
    lines = (tmp_path / "out" / "dict.txt").read_text().splitlines()
    assert lines[:3] == ["<special0> 996", "<mask> 995", "<special2> 994"]  # counts kept, ids >= 4 kept
    model = formats.load_model(str(tmp_path / "out" / "checkpoint.pt")).eval()
    ids, langs = hf_batch()
    diff = max_diff(hf, model, ids, langs, langs)
    MEASURED["xlm-to-fairseq"] = diff
    print(f"max |dlogit| xlm-to-fairseq: {diff:.2e}")
    assert diff <= TOL

    # --langs fr,en keeps two language embeddings in a new order: our 0 = HF 1 (fr), our 1 = HF 0 (en)
    assert convert.main(["xlm-to-fairseq", str(tmp_path / "mlm.pth"), str(tmp_path / "fren"),
                         "--langs", "fr,en"]) == 0
    model = formats.load_model(str(tmp_path / "fren" / "checkpoint.pt")).eval()
    ids, hf_langs = hf_batch(n_langs=2)
    diff = max_diff(hf, model, ids, hf_langs, 1 - hf_langs)
    MEASURED["xlm-to-fairseq --langs fr,en"] = diff
    assert diff <= TOL


@pytest.mark.parametrize("causal", [False, True], ids=["mlm", "clm"])
def test_a_checkpoint_saved_by_the_authors_transformer_matches_their_logits(tmp_path, causal):
    """A .pth written from the authors' own TransformerModel (their code in ../shared/anchors, random weights,
    their Dictionary) converts to a model whose logits equal their fwd + pred_layer's (bidirectional and
    causal), columns compared by symbol; ids and languages in their order."""
    from authors_release import authors_modules

    Dictionary, TransformerModel = authors_modules()
    dico = Dictionary(dict(enumerate(WORDS)), {w: i for i, w in enumerate(WORDS)},
                      {w: 1000 - i for i, w in enumerate(WORDS)})
    params = argparse.Namespace(
        n_langs=3, n_words=V, eos_index=dico.eos_index, pad_index=dico.pad_index, id2lang=dict(enumerate(LANGS)),
        lang2id={lang: i for i, lang in enumerate(LANGS)}, use_lang_emb=True, emb_dim=32, n_layers=2, n_heads=4,
        dropout=0.1, attention_dropout=0.1, gelu_activation=True, sinusoidal_embeddings=False, share_inout_emb=True,
        asm=False, mask_index=dico.index("<special1>"), mlm_steps=[(lang, None) for lang in LANGS], clm_steps=[])
    torch.manual_seed(4)
    theirs = TransformerModel(params, dico, is_encoder=True, with_output=True)
    with torch.no_grad():  # LayerNorm = identity and zero biases at init would hide swapped parameters
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    torch.save({"model": theirs.state_dict(), "dico_id2word": dico.id2word, "dico_word2id": dico.word2id,
                "dico_counts": dico.counts, "params": dict(vars(params))}, tmp_path / "model.pth")
    assert convert.main(["xlm-to-fairseq", str(tmp_path / "model.pth"), str(tmp_path / "out")]) == 0
    ours = formats.load_model(str(tmp_path / "out" / "checkpoint.pt")).eval()
    theirs.eval()

    ids, langs = hf_batch()  # the authors' ids (HF kept their vocabulary order): <s>=0, </s>=1, <pad>=2
    lengths = (ids != dico.pad_index).sum(1)
    with torch.no_grad():
        hidden = theirs("fwd", x=ids.t(), lengths=lengths, langs=langs.t(), causal=causal)
        expected = theirs.pred_layer.proj(hidden).transpose(0, 1)
        cols = column_map(ours.encoder.dictionary)
        got = ours(cols[ids], langs=langs, causal=causal)[0][..., cols]
    keep = ids != dico.pad_index
    diff = (got - expected)[keep].abs().max().item()
    MEASURED[f"authors' TransformerModel xlm-to-fairseq {'clm' if causal else 'mlm'}"] = diff
    print(f"max |dlogit| authors' TransformerModel ({'causal' if causal else 'bidirectional'}): {diff:.2e}")
    assert diff <= TOL
    # a converter that kept the authors' ids (no </s>/<pad> swap, no <mask> renaming) would fail it: their ids
    # read as ours, their columns as ours
    with torch.no_grad():
        kept_ids = ours(ids, langs=langs, causal=causal)[0][..., : len(WORDS)]
    assert (kept_ids - expected)[keep].abs().max().item() > 100 * TOL


def tiny_spm_model(path, pieces):
    """A valid sentencepiece BPE model file whose normal pieces are ``pieces`` (no merges between them)."""
    from transformers.convert_slow_tokenizer import import_protobuf

    proto = import_protobuf().ModelProto()
    proto.trainer_spec.model_type = 2  # BPE
    proto.trainer_spec.unk_piece = "<unk>"
    proto.normalizer_spec.add_dummy_prefix = proto.normalizer_spec.escape_whitespaces = True
    proto.normalizer_spec.remove_extra_whitespaces = True
    for i, piece in enumerate(["<unk>"] + list(pieces)):
        proto.pieces.add(piece=piece, score=-float(i), type=2 if i == 0 else 1)
    path.write_bytes(proto.SerializeToString())


def native_checkpoint(tmp_path, data=None, langs=("en", "es")):
    """A fairseq_xlm xlm_tiny checkpoint as training writes it: data-bin with dict.txt/spm.model elsewhere
    (``data``: a real data-bin; default: a 40-piece stand-in)."""
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    if data is None:
        data = tmp_path / "data-bin"
        data.mkdir()
        (data / "dict.txt").write_text("".join(f"\u2581p{i} {500 - i}\n" for i in range(40)))
        tiny_spm_model(data / "spm.model", [f"\u2581p{i}" for i in range(40)])
    dictionary = layout.load_dictionary(str(data))
    torch.manual_seed(5)
    model = factory.build_model("xlm_tiny", dictionary, list(langs))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.3)
    cfg = {**asdict(model.cfg), "_name": "xlm_tiny"}
    torch.save({"args": None, "cfg": {"model": cfg, "task": {"_name": "xlm_pretrain", "data": str(data),
                                                             "langs": ",".join(langs),
                                                             "mlm_steps": ",".join(langs)}},
                "model": model.state_dict(), "extra_state": {"epoch": 3},
                "optimizer_history": [{"criterion_name": "xlm_lm", "optimizer_name": "adam",
                                       "lr_scheduler_state": {"best": 2.5}, "num_updates": 10}]},
               ckpts / "checkpoint_best.pt")
    return ckpts / "checkpoint_best.pt", data, model.eval()


def test_fairseq_to_hf_matches_and_round_trips_bit_identically(tmp_path):
    ckpt, data, ours = native_checkpoint(tmp_path)
    res = run_cli("fairseq-to-hf", ckpt, tmp_path / "hf")
    assert res.returncode == 0, res.stderr
    hf_dir = tmp_path / "hf"
    assert {"config.json", "model.safetensors", "vocab.json", "dict.txt", "spm.model", "README.md"} <= set(
        os.listdir(hf_dir))
    assert "sentencepiece" in (hf_dir / "README.md").read_text()
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["lang2id"] == {"en": 0, "es": 1} and config["vocab_size"] == 45
    vocab = json.loads((hf_dir / "vocab.json").read_text())
    assert [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1])][:5] == ["<s>", "</s>", "<pad>", "<unk>", "\u2581p0"]
    assert vocab["<mask>"] == 44

    # HF's own model on the exported directory agrees with ours (HF ids -> ours by symbol)
    hf = transformers.XLMWithLMHeadModel.from_pretrained(hf_dir).eval()
    cols = torch.tensor([ours.encoder.dictionary.index(w) for w, _ in sorted(vocab.items(), key=lambda kv: kv[1])])
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(3, 45, (2, 7), generator=g)
    ids[:, 0], ids[1, 5:] = 1, HF_PAD
    langs = torch.randint(0, 2, ids.shape, generator=g)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=(ids != HF_PAD).long(), langs=langs).logits
        got = ours(cols[ids], langs=langs)[0][..., cols]
    diff = (got - expected)[ids != HF_PAD].abs().max().item()
    MEASURED["fairseq-to-hf"] = diff
    print(f"max |dlogit| fairseq-to-hf: {diff:.2e}")
    assert diff <= TOL

    # ... and back: every tensor identical, the same dict.txt, the same model config
    assert convert.main(["hf-to-fairseq", str(hf_dir), str(tmp_path / "back")]) == 0
    before = torch.load(ckpt, weights_only=True)
    after = torch.load(tmp_path / "back" / "checkpoint.pt", weights_only=True)
    assert before["model"].keys() == after["model"].keys()
    for key, tensor in before["model"].items():
        assert torch.equal(tensor, after["model"][key]), key
    assert (tmp_path / "back" / "dict.txt").read_bytes() == (data / "dict.txt").read_bytes()
    assert (tmp_path / "back" / "spm.model").read_bytes() == (data / "spm.model").read_bytes()
    assert layout.load_dictionary(str(tmp_path / "back")).symbols == ours.encoder.dictionary.symbols
    expected_cfg = {**asdict(ours.cfg), "n_langs": 2}  # "0 = from the task" becomes explicit
    for key, value in expected_cfg.items():
        if key != "_name":
            assert after["cfg"]["model"][key] == value, key
    assert after["cfg"]["task"]["langs"] == "en,es"


def test_outputs_are_not_overwritten_without_force(tmp_path):
    ckpt, _, _ = native_checkpoint(tmp_path)
    assert convert.main(["fairseq-to-hf", str(ckpt), str(tmp_path / "hf")]) == 0
    assert convert.main(["fairseq-to-hf", str(ckpt), str(tmp_path / "hf")]) == 1
    assert convert.main(["fairseq-to-hf", str(ckpt), str(tmp_path / "hf"), "--force"]) == 0
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]  # no staging directory left behind


def test_text_file_is_one_clear_cli_error(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not a checkpoint\n")
    res = run_cli("xlm-to-fairseq", notes, tmp_path / "out")
    assert res.returncode != 0
    lines = error_lines(res.stderr)
    assert len(lines) == 1 and str(notes) in lines[0] and "not a readable PyTorch checkpoint" in lines[0], res.stderr
    assert not (tmp_path / "out").exists()


def test_text_file_through_every_reader(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    assert convert.main(["fairseq-to-hf", str(notes), str(tmp_path / "o1")]) == 1
    assert convert.main(["hf-to-fairseq", str(tmp_path), str(tmp_path / "o2")]) == 1  # no config.json
    errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("fairseq_xlm.cli.convert: error")]
    assert len(errors) == 2 and str(notes) in errors[0] and "config.json" in errors[1]


def test_vocabulary_mismatch_is_refused(tmp_path, capsys):
    ckpt, data, _ = native_checkpoint(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "dict.txt").write_text("".join(f"x{i} 1\n" for i in range(30)))
    with pytest.raises(ValueError, match=r"vocabulary of 45 rows but the data dictionary has 35 symbols"):
        formats.load_model(str(ckpt), data_dir=str(other))
    assert convert.main(["fairseq-to-hf", str(ckpt), str(tmp_path / "hf"), "--dict", str(other / "dict.txt")]) == 1
    assert "45 rows" in capsys.readouterr().err and not (tmp_path / "hf").exists()


def test_unknown_arch_and_language_count_mismatches(tmp_path):
    ckpt, data, model = native_checkpoint(tmp_path)
    dictionary = model.encoder.dictionary
    with pytest.raises(ValueError, match="unknown fairseq_xlm architecture --arch 'xlm_nope'"):
        factory.build_model("xlm_nope", dictionary, ["en"])
    with pytest.raises(ValueError, match="--n-langs 3 does not match the task's 2 languages"):
        factory.build_model("xlm_tiny", dictionary, ["en", "es"], n_langs=3)
    hf = make_hf(tmp_path / "hf")
    assert convert.main(["hf-to-fairseq", str(tmp_path / "hf"), str(tmp_path / "three")]) == 0
    with pytest.raises(ValueError, match="has 3 language embeddings but the model is built for 2 languages"):
        formats.load_model(str(tmp_path / "three" / "checkpoint.pt"), langs=["en", "fr"])
    assert convert.main(["hf-to-fairseq", str(tmp_path / "hf"), str(tmp_path / "x"), "--langs", "en,xx"]) == 1
    assert hf is not None


class _Evil:
    """Unpickling this calls os.mkdir(path): stands for any code a hostile checkpoint could run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    armed = tmp_path / "armed"
    pickle.loads(pickle.dumps(_Evil(armed)))  # the payload is live: plain unpickling runs it
    assert armed.is_dir()

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(1)}, "extra_state": {"x": _Evil(marker)}, "dico_id2word": {}}, evil)
    with pytest.raises(CheckpointLoadError, match=r"evil\.pt.*refused to load.*mkdir"):
        checkpoint_utils.load_checkpoint_to_cpu(str(evil))
    assert convert.main(["xlm-to-fairseq", str(evil), str(tmp_path / "o1")]) == 1  # the authors' loader too
    assert convert.main(["fairseq-to-hf", str(evil), str(tmp_path / "o2")]) == 1
    assert not marker.exists()
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_stock_fairseq_checkpoint_still_loads(tmp_path):
    """argparse args, an OmegaConf DictConfig cfg and numpy scalars: all allowed by the allow-list."""
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(tmp_path), "--arch", "xlm_tiny", "--task", "language_modeling", "--optimizer", "adam", "--lr", "0.001"])
    cfg = OmegaConf.create({"model": {"_name": "xlm_tiny"}, "task": {"_name": "language_modeling"}, "l": [1, "a"]})
    torch.save({"args": args, "cfg": cfg, "model": {"w": torch.arange(3.0)},
                "optimizer_history": [{"criterion_name": "cross_entropy", "optimizer_name": "adam",
                                       "lr_scheduler_state": {"best": np.float64(1.5)}, "num_updates": 7}],
                "extra_state": {"val_loss": np.float64(2.25), "arr": np.arange(3)}, "last_optimizer_state": None},
               tmp_path / "stock.pt")
    state = checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "stock.pt"))
    assert state["extra_state"]["val_loss"] == 2.25 and isinstance(state["extra_state"]["val_loss"], np.float64)
    assert state["optimizer_history"][-1]["num_updates"] == 7
    assert torch.equal(state["model"]["w"], torch.arange(3.0))
    assert state["cfg"].model._name == "xlm_tiny"  # fairseq rebuilt cfg from the argparse args


def test_monolingual_hf_model_needs_and_takes_language_names(tmp_path, capsys):
    """Like HF's English-only XLMs: one language, no lang2id, so no language embeddings at all."""
    torch.manual_seed(9)
    config = transformers.XLMConfig(vocab_size=V, emb_dim=32, n_layers=1, n_heads=2, n_langs=1,
                                    max_position_embeddings=16, gelu_activation=False)
    hf = transformers.XLMWithLMHeadModel(config)
    with torch.no_grad():
        for param in hf.parameters():
            param.add_(torch.randn_like(param) * 0.3)
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "vocab.json").write_text(json.dumps({w: i for i, w in enumerate(WORDS)}))
    hf = transformers.XLMWithLMHeadModel.from_pretrained(tmp_path / "hf").eval()
    assert convert.main(["hf-to-fairseq", str(tmp_path / "hf"), str(tmp_path / "out")]) == 1
    assert "pass --langs" in capsys.readouterr().err
    assert convert.main(["hf-to-fairseq", str(tmp_path / "hf"), str(tmp_path / "out"), "--langs", "en"]) == 0
    model = formats.load_model(str(tmp_path / "out" / "checkpoint.pt")).eval()
    assert model.encoder.embeddings.embed_langs is None and model.cfg.activation_fn == "relu"
    ids, _ = hf_batch()
    cols = column_map(model.encoder.dictionary)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=(ids != HF_PAD).long()).logits
        got = model(cols[ids])[0][..., cols]
    diff = (got - expected)[ids != HF_PAD].abs().max().item()
    print(f"max |dlogit| hf-to-fairseq monolingual relu: {diff:.2e}")
    assert diff <= TOL
