"""The XLM Transformer built directly: masking of the output layer, causality, padding, language
embeddings, incremental decoding, beam search, initialisation from a pretrained encoder, presets."""

import math

import pytest
import torch
import torch.nn.functional as F
from fairseq.data import Dictionary
from fairseq.sequence_generator import SequenceGenerator

import fairseq_xlm  # noqa: F401  (registers models)
from fairseq_xlm.models.factory import build_model, model_config
from fairseq_xlm.models.modules import sinusoidal_table


def tokens(d, batch=3, length=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(d.nspecial, len(d) - 1, (batch, length), generator=g)


def eval_model(arch, d, langs=("en", "fr", "de"), **kw):
    torch.manual_seed(0)
    return build_model(arch, d, list(langs), **kw).eval()


def test_logits_only_at_masked_positions_equal_full_logits(dictionary):
    model = eval_model("xlm_tiny", dictionary)
    x = tokens(dictionary)
    langs = torch.tensor([0, 1, 2])
    full, _ = model(x, langs=langs)
    chosen = torch.zeros_like(x, dtype=torch.bool)
    chosen[0, 2] = chosen[1, 5] = chosen[2, 0] = chosen[2, 8] = True
    part, _ = model(x, langs=langs, masked_tokens=chosen)
    assert full.shape == (3, 9, len(dictionary))
    assert part.shape == (4, len(dictionary))
    torch.testing.assert_close(part, full[chosen], rtol=0, atol=1e-6)


def test_causal_mode_ignores_future_tokens(dictionary):
    model = eval_model("xlm_tiny", dictionary)
    x = tokens(dictionary)
    y = x.clone()
    y[:, 5:] = tokens(dictionary, seed=1)[:, 5:]
    out_x, _ = model(x, causal=True)
    out_y, _ = model(y, causal=True)
    torch.testing.assert_close(out_x[:, :5], out_y[:, :5], rtol=0, atol=1e-6)
    assert not torch.allclose(out_x[:, 5:], out_y[:, 5:])
    bidir, _ = model(y)
    assert not torch.allclose(bidir[:, :5], out_y[:, :5])  # bidirectional mode does see the future


@pytest.mark.parametrize("causal", [False, True])
def test_padding_does_not_change_real_positions(dictionary, causal):
    model = eval_model("xlm_tiny", dictionary)
    x = tokens(dictionary, batch=2, length=7)
    alone, _ = model(x[1:, :4], langs=torch.tensor([1]), causal=causal)
    padded = x.clone()
    padded[1, 4:] = dictionary.pad()
    batch, _ = model(padded, langs=torch.tensor([0, 1]), causal=causal)
    torch.testing.assert_close(batch[1, :4], alone[0], rtol=0, atol=1e-5)
    assert torch.isfinite(batch).all()


def test_language_embeddings_are_added_per_token(dictionary):
    model = eval_model("xlm_tiny", dictionary)
    x = tokens(dictionary, batch=1)
    per_seq, _ = model(x, langs=torch.tensor([2]))
    per_tok, _ = model(x, langs=torch.full_like(x, 2))
    other, _ = model(x, langs=torch.tensor([1]))
    torch.testing.assert_close(per_seq, per_tok)
    assert (per_seq - other).abs().max() > 1e-3
    emb = model.encoder.embeddings
    assert emb.embed_langs.weight.shape == (3, 64)
    # by hand: embedding sum -> LayerNorm (eval: no dropout)
    pos = torch.arange(9)
    expect = F.layer_norm(emb.embed_tokens(x) + emb.embed_positions(pos) + emb.embed_langs.weight[2],
                          (64,), emb.layernorm_embedding.weight, emb.layernorm_embedding.bias, 1e-12)
    torch.testing.assert_close(emb(x, None, torch.tensor([2])), expect)
    no_lang = eval_model("xlm_tiny", dictionary, no_lang_embeddings=True)
    assert no_lang.encoder.embeddings.embed_langs is None
    assert eval_model("xlm_tiny", dictionary, langs=["en"]).encoder.embeddings.embed_langs is None


def test_sinusoidal_positions_match_formula_and_stay_fixed(dictionary):
    table = sinusoidal_table(8, 6)
    assert table[3, 0] == pytest.approx(math.sin(3.0), abs=1e-6)
    assert table[3, 1] == pytest.approx(math.cos(3.0), abs=1e-6)
    assert table[5, 4] == pytest.approx(math.sin(5 / 10000 ** (4 / 6)), abs=1e-6)
    model = eval_model("xlm_tiny", dictionary, sinusoidal_embeddings=True)
    weight = model.encoder.embeddings.embed_positions.weight
    assert not weight.requires_grad
    torch.testing.assert_close(weight[:8], sinusoidal_table(512, 64)[:8])


def test_output_layer_is_tied_with_bias_and_attention_is_post_layernorm(dictionary):
    model = eval_model("xlm_tiny", dictionary)
    enc = model.encoder
    features, _ = model(tokens(dictionary), features_only=True)
    logits = enc.output_layer(features)
    torch.testing.assert_close(logits, features @ enc.embed_tokens.weight.T + enc.output_bias)
    # one layer by hand (eval mode), with naive softmax attention as the oracle for SDPA
    layer = enc.layers[0]
    x = torch.randn(2, 5, 64)
    att = layer.self_attn
    q, k, v = (p(x).view(2, 5, 4, 16).transpose(1, 2) for p in (att.q_proj, att.k_proj, att.v_proj))
    w = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1)
    a = att.out_proj((w @ v).transpose(1, 2).reshape(2, 5, 64))
    h = layer.self_attn_layer_norm(x + a)
    expect = layer.final_layer_norm(h + layer.fc2(F.gelu(layer.fc1(h))))
    torch.testing.assert_close(layer(x, None, None), expect, rtol=1e-5, atol=1e-5)


def test_bfloat16_forward_is_close_to_fp32(dictionary):
    model = eval_model("xlm_tiny", dictionary)
    x = tokens(dictionary)
    ref, _ = model(x, langs=torch.tensor([0, 1, 2]))
    out, _ = model.to(torch.bfloat16)(x, langs=torch.tensor([0, 1, 2]))
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.25


def mt_sample(d, x):
    return {"net_input": {"src_tokens": x, "src_lengths": x.ne(d.pad()).sum(1),
                          "src_langs": torch.zeros(len(x), dtype=torch.long),
                          "tgt_langs": torch.ones(len(x), dtype=torch.long)}}


def test_incremental_decoding_equals_full_decoding(dictionary):
    model = eval_model("xlm_mt_tiny", dictionary)
    x = tokens(dictionary, batch=2, length=6)
    x[1, 4:] = dictionary.pad()
    prev = torch.cat([torch.full((2, 1), dictionary.eos()), tokens(dictionary, batch=2, length=5, seed=3)], 1)
    net = mt_sample(dictionary, x)["net_input"]
    full, _ = model(prev_output_tokens=prev, **net)
    enc = model.encoder(**net)
    state = {}
    steps = [model.decoder(prev[:, : t + 1], encoder_out=enc, incremental_state=state)[0] for t in range(6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
    # the target language reaches the decoder through the encoder output
    other = dict(net, tgt_langs=torch.zeros(2, dtype=torch.long))
    assert not torch.allclose(model(prev_output_tokens=prev, **other)[0], full)


def test_beam_search_with_fairseq_sequence_generator(dictionary):
    model = eval_model("xlm_mt_tiny", dictionary)
    x = tokens(dictionary, batch=2, length=6)
    gen = SequenceGenerator([model], dictionary, beam_size=3, max_len_b=8)
    hyps = gen.generate([model], mt_sample(dictionary, x))
    assert len(hyps) == 2 and all(len(h) == 3 for h in hyps)
    best = hyps[0][0]
    assert best["tokens"][-1] == dictionary.eos() and len(best["tokens"]) <= 9
    # its score is the model's own length-normalised log-probability of that hypothesis
    prev = torch.cat([torch.tensor([dictionary.eos()]), best["tokens"][:-1]])[None]
    net = mt_sample(dictionary, x[:1])["net_input"]
    lprobs = model.get_normalized_probs(model(prev_output_tokens=prev, **net), log_probs=True)[0]
    total = lprobs.gather(1, best["tokens"][:, None]).sum()
    assert float(best["score"]) == pytest.approx(float(total) / len(best["tokens"]), abs=1e-4)


def save_fairseq_checkpoint(model, path):
    """The fields fairseq's load_checkpoint_to_cpu expects of a trained checkpoint."""
    torch.save({"model": model.state_dict(), "cfg": None, "args": None, "extra_state": {},
                "optimizer_history": [{"criterion_name": "XlmLmCriterion", "optimizer_name": "Adam",
                                       "lr_scheduler_state": {}, "num_updates": 0}],
                "last_optimizer_state": None}, path)


@pytest.mark.parametrize("which", ["both", "encoder", "decoder"])
def test_mt_model_initialised_from_one_pretrained_encoder(dictionary, tmp_path, which):
    pretrained = eval_model("xlm_tiny", dictionary)
    with torch.no_grad():  # shift every tensor so none equals a fresh initialisation (LayerNorm ones, zero biases)
        for p in pretrained.parameters():
            p.add_(0.5)
    ckpt = tmp_path / "xlm.pt"
    save_fairseq_checkpoint(pretrained, ckpt)
    torch.manual_seed(1)
    mt = build_model("xlm_mt_tiny", dictionary, ["en", "fr", "de"], pretrained_xlm_checkpoint=str(ckpt),
                     pretrained_xlm_init=which)
    src = pretrained.encoder.state_dict()
    enc, dec = mt.encoder.state_dict(), mt.decoder.stack.state_dict()
    for key, value in src.items():
        if key != "output_bias":
            assert torch.equal(enc[key], value) == (which in ("both", "encoder")), key
        assert torch.equal(dec[key], value) == (which in ("both", "decoder")), key
    assert "layers.0.encoder_attn.q_proj.weight" in dec and "layers.0.encoder_attn.q_proj.weight" not in src
    assert mt.cfg.pretrained_xlm_checkpoint is None  # fairseq-generate will not look for the file again


def test_pretrained_checkpoint_of_another_vocabulary_is_refused(dictionary, tmp_path):
    small = Dictionary()
    small.add_symbol("a")
    ckpt = tmp_path / "other.pt"
    save_fairseq_checkpoint(eval_model("xlm_tiny", small), ckpt)
    with pytest.raises(ValueError, match=r"other.pt has a vocabulary of 5 rows .* 45 symbols"):
        build_model("xlm_mt_tiny", dictionary, ["en", "fr", "de"], pretrained_xlm_checkpoint=str(ckpt))
    with pytest.raises(FileNotFoundError, match="--pretrained-xlm-checkpoint"):
        build_model("xlm_mt_tiny", dictionary, ["en"], pretrained_xlm_checkpoint=str(tmp_path / "nope.pt"))


@pytest.mark.parametrize("arch,shape", [
    ("xlm_mlm_enfr_1024", (6, 1024, 8, 4096)),
    ("xlm_mlm_xnli15_1024", (12, 1024, 8, 4096)),
    ("xlm_mlm_17_1280", (16, 1280, 16, 5120)),
    ("xlm_mlm_100_1280", (16, 1280, 16, 5120)),
    ("xlm_mlm_en_2048", (12, 2048, 16, 8192)),
    ("xlm_mt_mlm_enfr_1024", (6, 1024, 8, 4096)),
])
def test_presets(arch, shape):
    _, cfg = model_config(arch)
    assert (cfg.encoder_layers, cfg.encoder_embed_dim, cfg.encoder_attention_heads,
            cfg.encoder_ffn_embed_dim) == shape
    assert cfg.activation_fn == "gelu" and cfg.dropout == 0.1 and cfg.layer_norm_eps == 1e-12
    _, cfg = model_config(arch, encoder_layers=3)  # explicit flags win over the preset
    assert cfg.encoder_layers == 3


def test_bad_architecture_and_language_count(dictionary):
    with pytest.raises(ValueError, match="unknown fairseq_xlm architecture --arch 'xlm_nope'.*xlm_tiny"):
        build_model("xlm_nope", dictionary, ["en"])
    with pytest.raises(ValueError, match="--n-langs 3 does not match the task's 2 languages"):
        build_model("xlm_tiny", dictionary, ["en", "fr"], n_langs=3)
    three = eval_model("xlm_tiny", dictionary)
    two = eval_model("xlm_tiny", dictionary, langs=["en", "fr"])
    with pytest.raises(ValueError, match="3 language embeddings but the model is built for 2"):
        two.load_state_dict(three.state_dict())
