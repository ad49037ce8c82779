"""Product-key memory layers: equal to the authors' layer (values and gradients), their checkpoints convert
both ways with equal logits, the layer's placement and checks, the usage diagnostics, the values' optimizer,
no host syncs on a device, and fairseq-train with memories in xlm_pretrain and in the MT encoder and decoder."""

import argparse
import copy
import math
import re
import sys

import pytest
import torch
from authors_release import AUTHORS
from virtual_device import VirtualDevice

import fairseq_xlm  # noqa: F401  (registers models, tasks, xlm_pkm_adam)
from fairseq_xlm import formats
from fairseq_xlm.cli import convert
from fairseq_xlm.models import memory_usage
from fairseq_xlm.models.factory import build_model
from fairseq_xlm.models.memory import ProductKeyMemory
from fairseq_xlm.models.memory_config import MemoryConfig, memory_spec, parse_positions
from fairseq_xlm.optim.pkm_adam import XlmPkmAdam, XlmPkmAdamConfig

DIM = 32
SMALL = dict(mem_k_dim=16, mem_n_keys=8, mem_heads=2, mem_knn=4)
SMALL_FLAGS = ["--mem-k-dim", "16", "--mem-n-keys", "8", "--mem-heads", "2", "--mem-knn", "4"]
# the authors' option sets: their defaults (shrunk), and every query network / scoring / key variant
VARIANTS = {
    "defaults": {},
    "mlp_batchnorm_grouped_multi": dict(mem_query_layer_sizes="0,24,0", mem_multi_query_net=True,
                                        mem_grouped_conv=True, mem_query_batchnorm=True, mem_query_bias=False),
    "mlp_two_layers_multi": dict(mem_query_layer_sizes="0,24,0", mem_multi_query_net=True,
                                 mem_temperature=0.5, mem_score_subtract="mean", mem_score_normalize=True),
    "flat_median_shuffled_indices": dict(mem_implementation="flat", mem_n_keys=30, mem_heads=3, mem_knn=5,
                                         mem_score_subtract="median", mem_shuffle_indices=True),
    "identity_shuffled_query_shared_keys": dict(mem_k_dim=DIM, mem_query_layer_sizes="", mem_shuffle_query=True,
                                                mem_use_different_keys=False, mem_normalize_query=True,
                                                mem_keys_type="gaussian", mem_keys_normalized_init=True),
    "modulo_no_softmax_min": dict(mem_modulo_size=50, mem_score_softmax=False, mem_score_subtract="min",
                                  mem_keys_learn=False, mem_query_detach_input=True),
}


def authors_memory():
    if not (AUTHORS / "xlm" / "model" / "memory" / "memory.py").is_file():
        pytest.skip(f"the authors' code is not at {AUTHORS}")
    if str(AUTHORS) not in sys.path:
        sys.path.insert(0, str(AUTHORS))
    from xlm.model.memory import HashingMemory

    HashingMemory.VALUES = None  # their --mem_share_values global
    return HashingMemory


def authors_params(**overrides):
    """The authors' memory params: their argparse defaults, overrides, then their own check_params."""
    memory = authors_memory()
    parser = argparse.ArgumentParser()
    memory.register_args(parser)
    params = parser.parse_args([])
    params.optimizer = "adam,lr=0.0001"
    for key, value in {**SMALL, **overrides}.items():
        setattr(params, key, value)
    memory.check_params(params)
    return params


def our_config(params, **extra) -> MemoryConfig:
    """Our config for the authors' ``params``, through the converter's own mapping."""
    fields = formats.readers.from_authors_params({**vars(params), "use_memory": True}, "test")
    fields.update(extra)
    return MemoryConfig(**fields)


@pytest.mark.parametrize("variant", VARIANTS)
def test_layer_equals_the_authors_layer_values_and_gradients(variant):
    """Both built from the same options: the same initial keys (numpy seeds), then on the same weights the
    same outputs, input gradients and parameter gradients in fp32 (training mode: BatchNorm on batch
    statistics; dropout 0 so that both draw nothing)."""
    params = authors_params(**VARIANTS[variant])
    torch.manual_seed(0)
    theirs = authors_memory().build(DIM, DIM, params)
    ours = ProductKeyMemory(DIM, memory_spec(our_config(params), DIM))
    if params.mem_keys_type != "binary":
        torch.testing.assert_close(ours.keys, theirs.keys, rtol=0, atol=0)
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 7, DIM, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    out_theirs, out_ours = theirs(x), ours(x2)
    grad = torch.randn_like(out_theirs)
    out_theirs.backward(grad)
    out_ours.backward(grad)
    torch.testing.assert_close(out_ours, out_theirs, rtol=1e-6, atol=1e-6)
    if not params.mem_query_detach_input:
        torch.testing.assert_close(x2.grad, x.grad, rtol=1e-6, atol=1e-6)
    theirs_grads = {n: p.grad for n, p in theirs.named_parameters()}
    for name, p in ours.named_parameters():
        assert (p.grad is None) == (theirs_grads[name] is None), name
        if p.grad is not None:
            torch.testing.assert_close(p.grad, theirs_grads[name], rtol=1e-6, atol=1e-6, msg=name)


def authors_model_with_memory(positions="0,1+", share_values=False):
    """The authors' TransformerModel (2 layers, d=32) with memories, their params, and its vocabulary."""
    params = authors_params(mem_enc_positions=positions, mem_share_values=share_values)
    from xlm.data.dictionary import Dictionary as AuthorsDictionary
    from xlm.model.transformer import TransformerModel

    words = ["<s>", "</s>", "<pad>", "<unk>"] + [f"<special{i}>" for i in range(10)] + [f"w{i}" for i in range(30)]
    counts = {w: 1000 - i for i, w in enumerate(words)}
    dico = AuthorsDictionary(dict(enumerate(words)), {w: i for i, w in enumerate(words)}, counts)
    s_enc = [x for x in positions.split(",") if x]
    params.mem_enc_positions = [(int(x[:-1]), "after") if x.endswith("+") else (int(x), "in") for x in s_enc]
    params.mem_dec_positions = []
    vars(params).update(
        use_memory=True, n_langs=2, n_words=len(words), eos_index=1, pad_index=2, id2lang={0: "en", 1: "es"},
        lang2id={"en": 0, "es": 1}, use_lang_emb=True, emb_dim=DIM, n_layers=2, n_heads=4, dropout=0.1,
        attention_dropout=0.1, gelu_activation=True, sinusoidal_embeddings=False, share_inout_emb=True, asm=False,
        mask_index=5, mlm_steps=[("en", None), ("es", None)], clm_steps=[])
    torch.manual_seed(1)
    model = TransformerModel(params, dico, is_encoder=True, with_output=True)
    with torch.no_grad():  # LayerNorm = identity and zero biases at init would hide swapped parameters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval(), params, dico


def authors_logits(model, x, lengths, langs):
    """Their logits (B, T, V) for x (B, T) in their ids."""
    with torch.no_grad():
        h = model("fwd", x=x.t(), lengths=lengths, langs=langs.t(), causal=False)
        return model.pred_layer.proj(h).transpose(0, 1)


def test_authors_checkpoint_with_memories_converts_both_ways_with_their_logits(tmp_path):
    """Their model (a memory in place of layer 0's FFN, one after layer 1) saved as their .pth ->
    xlm-to-fairseq -> our logits equal theirs; our checkpoint -> fairseq-to-xlm -> their model loads it
    (strict) and gives the same logits again."""
    theirs, params, dico = authors_model_with_memory()
    torch.save({"model": theirs.state_dict(), "dico_id2word": dico.id2word, "dico_word2id": dico.word2id,
                "dico_counts": dico.counts, "params": dict(vars(params))}, tmp_path / "mem.pth")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(14, len(dico), (3, 9), generator=g)
    x[:, 0] = x[1, 6] = 1
    x[1, 7:] = 2  # their padding
    lengths = torch.tensor([9, 7, 9])
    langs = torch.tensor([0, 1, 0])[:, None].expand(3, 9)
    ref = authors_logits(theirs, x, lengths, langs)

    assert convert.main(["xlm-to-fairseq", str(tmp_path / "mem.pth"), str(tmp_path / "ours")]) == 0
    ours = formats.load_model(str(tmp_path / "ours" / "checkpoint.pt")).eval()
    assert ours.encoder.layers[0].fc1 is None and ours.encoder.layers[1].memory_after is not None
    swap = torch.tensor([0, 2, 1] + list(range(3, len(dico))))  # their </s>, <pad> are our <pad>, </s>
    with torch.no_grad():
        logits, _ = ours(swap[x], langs=langs)
    real = x.ne(2)
    torch.testing.assert_close(logits[:, :, swap][real], ref[real], rtol=1e-5, atol=1e-5)

    back = tmp_path / "back.pth"
    assert convert.main(["fairseq-to-xlm", str(tmp_path / "ours" / "checkpoint.pt"), str(back)]) == 0
    data = torch.load(back, weights_only=False)
    from xlm.data.dictionary import Dictionary as AuthorsDictionary
    from xlm.model.transformer import TransformerModel

    authors_memory()
    again = TransformerModel(argparse.Namespace(**data["params"]),
                             AuthorsDictionary(data["dico_id2word"], data["dico_word2id"], data["dico_counts"]),
                             is_encoder=True, with_output=True)
    again.load_state_dict(data["model"], strict=True)
    torch.testing.assert_close(authors_logits(again.eval(), x, lengths, langs)[real], ref[real], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="HF's XLM has no product-key memory"):
        formats.write_hf(formats.read_fairseq(str(tmp_path / "ours" / "checkpoint.pt")), str(tmp_path / "hf"))


MEMORY = dict(use_memory=True, **SMALL)


def test_placement_sharing_and_clear_errors(dictionary):
    """'N' replaces layer N's FFN (no FFN weights), 'N+' follows it; shared values are one parameter across
    encoder and decoder; bad options name their flag."""
    assert parse_positions("0,1+", 2, "--mem-enc-positions") == [(0, "in"), (1, "after")]
    mt = build_model("xlm_mt_tiny", dictionary, ["en", "fr"], mem_enc_positions="1", mem_dec_positions="0+",
                     mem_share_values=True, **MEMORY)
    enc, dec = mt.encoder.layers, mt.decoder.stack.layers
    assert enc[1].fc1 is None and enc[1].memory_in is not None and enc[0].memory_in is None
    assert dec[0].fc1 is not None and dec[0].memory_after is not None
    assert enc[1].memory_in.values.weight is dec[0].memory_after.values.weight
    names = [n for n, _ in mt.named_parameters()]
    assert sum(n.endswith("values.weight") for n in names) == 1  # deduplicated for the optimizer
    for kwargs, flag in [(dict(mem_enc_positions="2"), "--mem-enc-positions"),
                         (dict(mem_enc_positions="0", mem_knn=9), "--mem-knn"),
                         (dict(mem_enc_positions="0", mem_v_dim=7), "--mem-v-dim"),
                         (dict(mem_enc_positions="0", mem_input2d=True), "--mem-input2d"),
                         (dict(mem_enc_positions="0", mem_score_subtract="max"), "--mem-score-subtract"),
                         (dict(mem_enc_positions=""), "--mem-enc-positions")]:
        with pytest.raises(ValueError, match=re.escape(flag)):
            build_model("xlm_tiny", dictionary, ["en", "fr"], **{**MEMORY, **kwargs})
    with pytest.raises(ValueError, match="needs --use-memory"):
        build_model("xlm_tiny", dictionary, ["en", "fr"], mem_enc_positions="0")


def test_usage_diagnostics_by_hand():
    """Used share and KL from uniform on hand-made usage; a memory's reads land in its counters."""
    uniform = torch.stack([torch.ones(8), torch.full((8,), 0.5)])
    assert memory_usage.used_percent(uniform) == 100.0 and abs(memory_usage.kl_from_uniform(uniform)) < 1e-12
    one = torch.zeros(2, 8)
    one[:, 3] = 5.0
    assert memory_usage.used_percent(one) == 12.5
    assert memory_usage.kl_from_uniform(one) == pytest.approx(math.log(8))
    mem = ProductKeyMemory(DIM, memory_spec(MemoryConfig(**SMALL), DIM))
    mem(torch.randn(5, DIM))
    usage = mem.take_usage()
    assert usage[0].sum() == 5 * 2 * 4 and usage[1].sum().item() == pytest.approx(5 * 2)  # softmax rows sum to 1
    assert mem.take_usage() is None and memory_usage.short_name("decoder.stack.layers.0.memory_after") == "dec0after"


def test_values_optimizer_keeps_its_own_rate_and_takes_sparse_gradients(dictionary):
    """xlm_pkm_adam: the scheduler's LR reaches the model's Adam only; the values step with SparseAdam on
    sparse gradients exactly as torch's SparseAdam alone; clipping sees both kinds of gradient."""
    torch.manual_seed(0)
    model = build_model("xlm_tiny", dictionary, ["en", "fr"], mem_enc_positions="1", mem_sparse=True, **MEMORY)
    cfg = XlmPkmAdamConfig(lr=[1e-3], adam_betas="(0.9, 0.999)", mem_values_optimizer="adam,lr=0.01")
    opt = XlmPkmAdam(cfg, [p for p in model.parameters() if p.requires_grad])
    values = model.encoder.layers[1].memory_in.values.weight
    reference = torch.optim.SparseAdam([values_copy := torch.nn.Parameter(values.detach().clone())], lr=0.01)
    x = torch.randint(4, len(dictionary), (2, 6))
    logits, _ = model(x, langs=torch.tensor([0, 1]))
    logits.float().pow(2).mean().backward()
    assert values.grad.is_sparse
    values_copy.grad = values.grad.clone()
    opt.set_lr(5e-4)
    assert opt.get_lr() == 5e-4 and opt.values_opt.param_groups[0]["lr"] == 0.01
    norm = opt.clip_grad_norm(0.0)
    dense = [p.grad.to_dense() if p.grad.is_sparse else p.grad for p in model.parameters() if p.grad is not None]
    assert norm.item() == pytest.approx(torch.cat([g.flatten() for g in dense]).norm().item(), rel=1e-5)
    opt.step()
    reference.step()
    torch.testing.assert_close(values.detach(), values_copy.detach())
    assert set(opt.state_dict()) == {"model", "mem_values"}
    with pytest.raises(ValueError, match="--mem-values-optimizer"):
        XlmPkmAdam(XlmPkmAdamConfig(lr=[1e-3], adam_betas="(0.9, 0.999)", mem_values_optimizer="rmsprop,lr=0.1"),
                   list(model.parameters()))


def mem_models(dictionary):
    torch.manual_seed(0)
    langs = ["en", "fr"]
    return {"enc": build_model("xlm_tiny", dictionary, langs, mem_enc_positions="0,1+", **MEMORY),
            "mt": build_model("xlm_mt_tiny", dictionary, langs, mem_enc_positions="1", mem_dec_positions="0,1+",
                              **MEMORY)}


DEVICE_PATHS = ("mlm", "mt_train_padded", "incremental_decoding_steps")


def test_memory_paths_on_a_device_make_no_host_sync(dictionary):
    """test_device.py's paths with memories: on the meta device (no data at all) and under the virtual
    accelerator, zero host syncs beyond the MLM gather's one read, gradients on the device."""
    import test_device as td

    models = mem_models(dictionary)
    for path in DEVICE_PATHS:
        m = td.moved(models, td.META)
        loss = td.PATHS[path](m, dictionary, td.META, gather=False)
        if loss is not None:
            loss.backward()
            assert td.grads_on(m, td.META), path
        with VirtualDevice() as dev:
            m = td.moved(models, dev.device)
            loss = td.PATHS[path](m, dictionary, dev.device, gather=True)
            if loss is not None:
                loss.backward()
                assert td.grads_on(m, dev.device), path
        allowed = 1 if path == "mlm" else 0
        assert len(dev.syncs) == allowed, (path, dev.syncs)


def test_memory_path_on_a_device_computes_what_the_cpu_computes(dictionary):
    model = td_eval(mem_models(dictionary)["enc"])
    x = torch.randint(4, len(dictionary), (3, 9))
    ref, _ = model(x)
    with VirtualDevice() as dev:
        out, _ = copy.deepcopy(model).to(dev.device)(x.to(dev.device))
    torch.testing.assert_close(out.elem, ref, rtol=1e-5, atol=1e-5)


def td_eval(model):
    return copy.deepcopy(model).eval()


def test_pretraining_with_memories_logs_usage_and_saves_them(bible_databin, pkg_dir, run_fairseq, tmp_path):
    """fairseq-train xlm_pretrain, 2 updates: a memory in place of layer 0's FFN and one after layer 1, sparse
    values with their own optimizer and clipping; usage logged in training and validation."""
    out = run_fairseq("fairseq_cli.train", [
        bible_databin, "--user-dir", pkg_dir, "--task", "xlm_pretrain", "--arch", "xlm_tiny", "--criterion", "xlm_lm",
        "--langs", "en,es", "--mlm-steps", "en,es", "--optimizer", "xlm_pkm_adam", "--lr", "1e-3",
        "--clip-norm", "1", "--batch-size", "4", "--tokens-per-sample", "64", "--cpu", "--num-workers", "0",
        "--log-interval", "1", "--save-dir", tmp_path, "--no-epoch-checkpoints", "--max-update", "2",
        "--use-memory", "--mem-enc-positions", "0,1+", "--mem-sparse", *SMALL_FLAGS]).stdout
    valid = [line for line in out.splitlines() if "valid on 'valid' subset" in line][-1]
    used = float(re.search(r"mem_used_enc0in ([0-9.]+)", valid).group(1))
    assert 0 < used <= 100 and re.search(r"mem_kl_enc1after [0-9.]+", valid)
    assert re.search(r"train_inner .*mem_used_enc1after=", out)
    state = torch.load(tmp_path / "checkpoint_last.pt", weights_only=False)
    assert "encoder.layers.0.memory_in.values.weight" in state["model"]
    assert not any(k.startswith("encoder.layers.0.fc1") for k in state["model"])
    assert state["cfg"]["model"]["mem_enc_positions"] == "0,1+"


def test_mt_training_with_memories_in_encoder_and_decoder(bible_databin, pkg_dir, run_fairseq, tmp_path):
    """fairseq-train unsupervised_mt, 2 updates (an MT step, then a BT step whose greedy decoding reads the
    decoder's memory), memories in the encoder and the decoder."""
    out = run_fairseq("fairseq_cli.train", [
        bible_databin, "--user-dir", pkg_dir, "--task", "unsupervised_mt", "--arch", "xlm_mt_tiny",
        "--langs", "en,es", "--mt-steps", "en-es", "--bt-steps", "es-en-es", "--bt-max-len-a", "0",
        "--bt-max-len-b", "6", "--criterion", "label_smoothed_cross_entropy", "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "4",
        "--cpu", "--num-workers", "0", "--log-interval", "1", "--save-dir", tmp_path, "--no-save",
        "--max-update", "2", "--use-memory", "--mem-enc-positions", "1", "--mem-dec-positions", "0+",
        *SMALL_FLAGS]).stdout
    assert re.search(r"mem_used_enc1in[= ][0-9.]+", out) and re.search(r"mem_used_dec0after[= ][0-9.]+", out)
