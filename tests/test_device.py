"""Every model path on a device other than the CPU, checked without a GPU: no tensor is made on another
device than the input's, and no forward or backward makes the host wait for the device.

Two tools:
- torch's ``meta`` device (its own rules): parameters and inputs on ``meta``; a tensor made on the CPU that
  meets them raises, and any host read of data (``.item()``, ``bool()``, ``nonzero``) raises, as meta
  tensors have none.
- ``virtual_device.VirtualDevice``: real numbers under an accelerator's device rules, with every host sync
  recorded; it also runs the decoding loops, which are data-dependent by nature, against a CPU run.

Fake CUDA tensors (``FakeTensorMode``) cannot serve here: on a CPU-only torch build, Python indexing of one
fails ("not linked with support for cuda devices") before any model code runs.
"""

import copy
import inspect
import os

import pytest
import torch
import torch.nn.functional as F
from virtual_device import CrossDeviceError, VirtualDevice

import fairseq_xlm  # noqa: F401  (registers models)
from fairseq_xlm.data.backtranslation import backtranslate_sample, translate
from fairseq_xlm.models.factory import build_model
from fairseq_xlm.models.modules import attention_mask
from fairseq_xlm.models.xlm_transformer import XlmEncoder
from fairseq_xlm.tasks.xnli import add_classification_head, classification_logits

META = torch.device("meta")
B, T = 3, 9


@pytest.fixture(scope="module")
def models(dictionary):
    """CPU models: encoder (MLM/CLM/TLM), encoder-decoder, encoder with the xnli classification head."""
    torch.manual_seed(0)
    langs = ["en", "fr"]
    xnli = add_classification_head(build_model("xlm_tiny", dictionary, langs), num_classes=3, dropout=0.1)
    return {"enc": build_model("xlm_tiny", dictionary, langs), "mt": build_model("xlm_mt_tiny", dictionary, langs),
            "xnli": xnli}


def tokens(d, padded, width=T, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(d.nspecial, len(d), (B, width), generator=g)
    if padded:
        x[1, 5:] = d.pad()
        x[2, 7:] = d.pad()
    return x


def lm_loss(d, logits, x, chosen, dev):
    """Cross-entropy at ``chosen`` (gathered logits) or, with ``chosen`` None, at every real token."""
    if chosen is not None:
        return F.cross_entropy(logits, x[chosen].to(dev))
    return F.cross_entropy(logits.reshape(-1, len(d)), x.reshape(-1).to(dev), ignore_index=d.pad())


def masked(d, x, gather):
    chosen = x.ne(d.pad()) & (torch.arange(x.numel()).view_as(x) % 3 == 0)
    return chosen if gather else None


def mlm(m, d, dev, gather):
    x = tokens(d, padded=True)
    chosen = masked(d, x, gather)
    logits, _ = m["enc"](x.to(dev), langs=torch.tensor([0, 1, 0]).to(dev),
                         masked_tokens=None if chosen is None else chosen.to(dev))
    return lm_loss(d, logits, x, chosen, dev)


def clm(padded, flag=None):
    """``flag``: the collater's host-side ``padded`` (False: no masks at all, SDPA's is_causal)."""
    def path(m, d, dev, gather):
        x = tokens(d, padded)
        logits, _ = m["enc"](x.to(dev), langs=torch.tensor([1, 0, 1]).to(dev), causal=True, padded=flag)
        return lm_loss(d, logits[:, :-1], x[:, 1:], None, dev)
    return path


def mlm_unpadded_flag(m, d, dev, gather):
    """A stream batch as collate_lm gives it: no padding, padded=False (no masks)."""
    x = tokens(d, padded=False)
    chosen = masked(d, x, gather)
    logits, _ = m["enc"](x.to(dev), langs=torch.tensor([0, 1, 0]).to(dev), padded=False,
                         masked_tokens=None if chosen is None else chosen.to(dev))
    return lm_loss(d, logits, x, chosen, dev)


def tlm(m, d, dev, gather):
    """A sentence pair per row: positions restart and the language changes at the second sentence."""
    x = tokens(d, padded=False, width=10)
    positions = torch.cat([torch.arange(5), torch.arange(5)]).expand(B, 10)
    langs = torch.cat([torch.zeros(5, dtype=torch.long), torch.ones(5, dtype=torch.long)]).expand(B, 10)
    chosen = masked(d, x, gather)
    logits, _ = m["enc"](x.to(dev), langs=langs.to(dev), positions=positions.to(dev),
                         masked_tokens=None if chosen is None else chosen.to(dev))
    return lm_loss(d, logits, x, chosen, dev)


def mt_input(d, padded, dev):
    src = tokens(d, padded, seed=1)
    langs = torch.zeros(B, dtype=torch.long)
    return {"src_tokens": src.to(dev), "src_lengths": src.ne(d.pad()).sum(1).to(dev),
            "src_langs": langs.to(dev), "tgt_langs": (langs + 1).to(dev)}


def mt_train(padded):
    def path(m, d, dev, gather):
        tgt = tokens(d, padded, seed=2)
        prev = torch.cat([torch.full((B, 1), d.eos()), tgt[:, :-1]], 1)
        logits, _ = m["mt"](prev_output_tokens=prev.to(dev), **mt_input(d, padded, dev))
        return lm_loss(d, logits, tgt, None, dev)
    return path


def incremental_steps(m, d, dev, gather):
    """What a decoding loop asks of the model: encode, then one token per step, with a beam reorder."""
    model = m["mt"].eval()
    with torch.no_grad():
        enc = model.encoder(**mt_input(d, True, dev))
        prev = tokens(d, padded=False, seed=3).to(dev)
        state = {}
        for step in range(4):
            model.decoder(prev[:, : step + 1], encoder_out=enc, incremental_state=state)
        order = torch.tensor([2, 0, 0]).to(dev)
        enc = model.encoder.reorder_encoder_out(enc, order)
        model.decoder.reorder_incremental_state_scripting(state, order)
        model.decoder(prev[:, :5], encoder_out=enc, incremental_state=state)
    return None


def xnli(m, d, dev, gather):
    x = tokens(d, padded=True)
    langs = torch.tensor([0, 1, 1])[:, None].expand(B, T)
    net_input = {"src_tokens": x.to(dev), "src_lengths": x.ne(d.pad()).sum(1).to(dev), "langs": langs.to(dev)}
    return F.cross_entropy(classification_logits(m["xnli"], net_input), torch.tensor([0, 2, 1]).to(dev))


PATHS = {
    "mlm": mlm, "clm_full_length": clm(False), "clm_padded": clm(True), "tlm": tlm,
    "mlm_flagged_unpadded": mlm_unpadded_flag, "clm_flagged_unpadded": clm(False, flag=False),
    "mt_train_full_length": mt_train(False), "mt_train_padded": mt_train(True),
    "incremental_decoding_steps": incremental_steps, "xnli_classification": xnli,
}
GATHERS = ("mlm", "tlm", "mlm_flagged_unpadded")  # logits only at predicted positions: a data-dependent gather, as in the authors' code
MODELS_DIR = os.path.dirname(inspect.getsourcefile(XlmEncoder))


def where(func, text: str) -> str:
    """``file:line`` of the line of ``func`` that contains ``text`` (as VirtualDevice records a sync)."""
    lines, start = inspect.getsourcelines(func)
    return f"{inspect.getsourcefile(func)}:{start + next(i for i, line in enumerate(lines) if text in line)}"


def moved(models, device):
    """Copies in training mode (dropout on) on ``device``."""
    return {name: copy.deepcopy(model).train().to(device) for name, model in models.items()}


def evaluated(models, dtype=torch.float32):
    """Copies without dropout (comparable to fp32), cast as fairseq's --bf16 / --fp16 do."""
    return {name: copy.deepcopy(model).eval().to(dtype) for name, model in models.items()}


def grads_on(models, device):
    return all(p.grad is None or p.grad.device == device for m in models.values() for p in m.parameters())


@pytest.mark.parametrize("path", PATHS)
def test_model_path_runs_on_the_meta_device(models, dictionary, path):
    """Forward and backward with no data: any host read or CPU-made tensor would raise. The MLM/TLM gather
    (data-dependent by design) is replaced here by logits at every position; see the next test."""
    m = moved(models, META)
    loss = PATHS[path](m, dictionary, META, gather=False)
    if loss is not None:
        assert loss.device == META
        loss.backward()
        assert grads_on(m, META)


def test_causal_mask_without_padding_is_made_on_the_given_device():
    """The bug that stopped CLM and every MT decoder on CUDA at the first full-length batch."""
    assert attention_mask(None, True, 4, 4, META).device == META
    assert attention_mask(torch.zeros(2, 4, dtype=torch.bool, device=META), False, 4, 4, META).device == META


@pytest.mark.parametrize("path", PATHS)
def test_model_path_has_no_host_sync_on_a_device(models, dictionary, path):
    """Zero host syncs in forward and backward; MLM/TLM allow exactly one read of the masked positions
    (forward; the authors' model gathers them too), whose index gather needs none in backward."""
    with VirtualDevice() as dev:
        m = moved(models, dev.device)
        loss = PATHS[path](m, dictionary, dev.device, gather=True)
        forward = list(dev.syncs)
        if loss is not None:
            loss.backward()
            assert grads_on(m, dev.device)
    backward = dev.syncs[len(forward):]
    if path in GATHERS:
        assert forward == [("aten.nonzero.default", where(XlmEncoder.forward, "masked_tokens.reshape(-1).nonzero()"))]
        assert backward == []
    else:
        assert forward == [] and backward == []


def test_virtual_device_refuses_what_cuda_refuses_and_records_syncs():
    """The tool itself, on the two kinds of bug this file guards against."""
    with VirtualDevice() as dev:
        x = torch.ones(2, 4, device=dev.device)
        with pytest.raises(CrossDeviceError, match=r"cpu tensor of shape \(4, 4\)"):
            x.unsqueeze(1) * torch.ones(4, 4).tril()  # a mask made without device=
        y = x * torch.tensor(2.0) + torch.ones(4, 4, device=x.device).tril()[0]  # CPU scalars pass, as on CUDA
        assert dev.syncs == []
        bool(y.sum() > 0), y.cpu(), y.tolist(), y[y > 2]
    assert [op for op, _ in dev.syncs] == ["aten._local_scalar_dense.default", "aten._to_copy.default", "tolist",
                                           "aten.index.Tensor"]
    assert all(line.startswith(os.path.abspath(__file__) + ":") for _, line in dev.syncs)


def test_virtual_device_computes_what_the_cpu_computes(models, dictionary):
    x = tokens(dictionary, padded=True)
    model = evaluated(models)["enc"]
    ref, _ = model(x, causal=True)
    with VirtualDevice() as dev:
        out, _ = copy.deepcopy(model).to(dev.device)(x.to(dev.device), causal=True)
    torch.testing.assert_close(out.elem, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_logits_at_predicted_rows_on_a_device_equal_the_cpu_path(models, dictionary, causal):
    """Off the CPU the last layer computes every query (no host read); on the CPU only the predicted rows'
    (packed per sentence): the same logits."""
    x = tokens(dictionary, padded=True)
    chosen = x.ne(dictionary.pad()) & (torch.arange(x.numel()).view(x.shape) % 3 == 0)
    model = evaluated(models)["enc"]
    ref, _ = model(x, causal=causal, masked_tokens=chosen)
    with VirtualDevice() as dev:
        out, _ = copy.deepcopy(model).to(dev.device)(x.to(dev.device), causal=causal,
                                                     masked_tokens=chosen.to(dev.device))
    torch.testing.assert_close(out.elem, ref, rtol=1e-5, atol=1e-5)


def model_syncs(dev):
    return [(op, line) for op, line in dev.syncs if line.startswith(MODELS_DIR + os.sep)]


@pytest.mark.parametrize("beam,padded", [(1, True), (1, False), (3, True)])
def test_decoding_loops_stay_on_the_device(models, dictionary, beam, padded):
    """Greedy back-translation and beam search (fairseq's SequenceGenerator) check "all finished" on the host
    once per step, so this checks device correctness (and the same hypotheses as on the CPU), not zero
    syncs; the model itself adds none."""
    model = evaluated(models)["mt"]
    net_input = mt_input(dictionary, padded, "cpu")
    expected = translate(model, net_input, 1, beam=beam)
    with VirtualDevice() as dev:
        m = copy.deepcopy(model).to(dev.device)
        hyps = translate(m, {k: v.to(dev.device) for k, v in net_input.items()}, 1, beam=beam)
    assert all(h.device == dev.device for h in hyps)
    assert [h.elem.tolist() for h in hyps] == [h.tolist() for h in expected]
    assert model_syncs(dev) == []


def test_backtranslation_step_stays_on_the_device(models, dictionary):
    """Online BT: translate (host-checked loop), then train on (synthetic -> real) with no sync in the model."""
    tgt = tokens(dictionary, padded=True, seed=4)
    prev = torch.cat([torch.full((B, 1), dictionary.eos()), tgt[:, :-1]], 1)
    with VirtualDevice() as dev:
        m = moved(models, dev.device)["mt"]
        net_input = dict(mt_input(dictionary, True, dev.device), prev_output_tokens=prev.to(dev.device))
        sample = backtranslate_sample(m, {"net_input": net_input, "target": tgt.to(dev.device)}, mid_lang_id=0)
        assert all(t.device == dev.device for t in sample["net_input"].values())
        before = len(dev.syncs)
        logits, _ = m(**sample["net_input"])
        lm_loss(dictionary, logits, tgt, None, dev.device).backward()
        assert dev.syncs[before:] == [] and grads_on({"mt": m}, dev.device)


def test_positions_beyond_the_table_give_one_clear_error(models, dictionary):
    """Default positions are checked from the batch width (no data read, so also on meta); explicit (TLM)
    positions on the CPU, where reading them costs no sync; decoding steps from the step count."""
    enc = models["enc"]
    limit = enc.encoder.max_positions()
    wide = torch.full((1, limit + 1), dictionary.eos())
    for model, x in ((enc, wide), (copy.deepcopy(enc).to(META), wide.to(META))):
        with pytest.raises(ValueError, match=rf"position {limit} is beyond the model's --max-positions {limit}"):
            model(x)
    positions = torch.arange(T)[None].clone()
    positions[0, 4] = limit
    with pytest.raises(ValueError, match="--max-positions"):
        enc(tokens(dictionary, padded=False)[:1], positions=positions)
    mt = evaluated(models)["mt"]
    enc_out = mt.encoder(**mt_input(dictionary, True, "cpu"))
    with pytest.raises(ValueError, match=rf"position {limit} is beyond"):
        mt.decoder(torch.full((B, limit + 1), dictionary.eos()), encoder_out=enc_out, incremental_state={})


LOW_PRECISION = [torch.bfloat16, torch.float16]
TRAINED = ["mlm", "clm_full_length", "mt_train_padded", "xnli_classification"]


def assert_close_to_fp32(models, dictionary, path, low, m):
    ref = PATHS[path](evaluated(models), dictionary, "cpu", gather=True)
    assert torch.isfinite(low) and abs(float(low) - float(ref)) < 0.05 * float(ref), (float(low), float(ref))
    low.backward()
    grads = [p.grad for model in m.values() for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("path", TRAINED)
def test_half_precision_model_trains_close_to_fp32(models, dictionary, path, dtype):
    """fairseq's --bf16 / --fp16 cast the whole model: the loss is near fp32's and every gradient finite."""
    m = evaluated(models, dtype)
    loss = PATHS[path](m, dictionary, "cpu", gather=True)
    assert loss.dtype == dtype
    assert_close_to_fp32(models, dictionary, path, loss, m)


@pytest.mark.parametrize("path", TRAINED)
def test_bfloat16_autocast_trains_close_to_fp32(models, dictionary, path):
    m = evaluated(models)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = PATHS[path](m, dictionary, "cpu", gather=True)
    assert_close_to_fp32(models, dictionary, path, loss, m)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_incremental_decoding_in_half_precision(models, dictionary, dtype):
    """Step-by-step logits stay near full fp32 decoding; greedy and beam search finish every sentence."""
    ref_model, model = evaluated(models)["mt"], evaluated(models, dtype)["mt"]
    net_input = mt_input(dictionary, True, "cpu")
    prev = tokens(dictionary, padded=False, seed=3)
    full, _ = ref_model(prev_output_tokens=prev, **net_input)
    enc, state = model.encoder(**net_input), {}
    steps = [model.decoder(prev[:, : t + 1], encoder_out=enc, incremental_state=state)[0] for t in range(T)]
    steps = torch.cat(steps, dim=1)
    assert steps.dtype == dtype and (steps.float() - full).abs().max() < 0.25
    for beam in (1, 2):
        hyps = translate(model, net_input, 1, beam=beam)
        assert len(hyps) == B and all(h[-1] == dictionary.eos() and 1 < len(h) <= 1.3 * T + 6 for h in hyps)


@pytest.mark.parametrize("causal", [False, True])
def test_padded_false_skips_masks_with_identical_numbers(models, dictionary, causal):
    """The collater's host-side ``padded=False`` drops the masks (SDPA may take its flash kernels) and
    changes no number; collate_lm sets it from the lengths it pads. On the CPU the model finds an unpadded
    batch by itself (reading it is free there); on a device it keeps the masks unless told."""
    from fairseq_xlm.data.lm_datasets import collate_lm

    enc = copy.deepcopy(models["enc"]).eval()
    x = tokens(dictionary, padded=False)
    langs = torch.tensor([0, 1, 0])
    with torch.no_grad():
        with VirtualDevice() as dev:
            masked_out, extra = copy.deepcopy(enc).to(dev.device)(x.to(dev.device), langs=langs.to(dev.device),
                                                                  causal=causal)
        free, free_extra = enc(x, langs=langs, causal=causal, padded=False)
        found, found_extra = enc(x, langs=langs, causal=causal)
    torch.testing.assert_close(free, masked_out.elem, rtol=0, atol=1e-5)
    assert extra["padding_mask"] is not None and free_extra["padding_mask"] is None
    assert found_extra["padding_mask"] is None and torch.equal(found, free)

    def item(n):
        t = torch.arange(4, 4 + n)
        return {"source": t, "target": t, "langs": torch.zeros_like(t), "positions": None}

    assert collate_lm([item(5), item(5)], dictionary.pad(), causal)["net_input"]["padded"] is False
    assert collate_lm([item(5), item(3)], dictionary.pad(), causal)["net_input"]["padded"] is True
