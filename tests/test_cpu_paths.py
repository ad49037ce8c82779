"""The CPU training fast paths against their references: explicit attention vs SDPA, the cheap dropout mask
vs the Bernoulli law, the last layer at predicted rows only vs the full model, the tied output layer vs
F.linear."""

import math

import pytest
import torch
import torch.nn.functional as F

import fairseq_xlm  # noqa: F401
from fairseq_xlm.models.dropout import drop_mask, dropout, keep_mask
from fairseq_xlm.models.factory import build_model
from fairseq_xlm.models.modules import attention_mask, explicit_attention
from fairseq_xlm.models.tied_output import tied_output


def qkv(b=3, h=4, t=7, s=7, d=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g).to(dtype).requires_grad_() for n in (t, s, s)]


def pad_mask(b=3, s=7):
    pad = torch.zeros(b, s, dtype=torch.bool)
    pad[1, 5:] = True
    pad[2, 3:] = True
    return pad


CASES = {
    "free": lambda t, s: (None, False),
    "padded": lambda t, s: (attention_mask(pad_mask(3, s), False, t, s, torch.device("cpu")), False),
    "causal": lambda t, s: (None, True),
    "causal+padded": lambda t, s: (attention_mask(pad_mask(3, s), True, t, s, torch.device("cpu")), True),
}


# SDPA's is_causal aligns top-left when T != S (the model never asks for that), so "causal" is square only
@pytest.mark.parametrize("case,t,s", [(c, t, s) for c in sorted(CASES) for t, s in [(7, 7), (1, 7), (4, 9)]
                                      if c != "causal" or t == s])
def test_explicit_attention_equals_sdpa_values_and_gradients(case, t, s):
    mask, causal = CASES[case](t, s)
    q, k, v = qkv(t=t, s=s)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
    ref_grads = torch.autograd.grad(ref.pow(2).sum(), (q, k, v))
    out = explicit_attention(q, k, v, mask, 0.0, causal)
    grads = torch.autograd.grad(out.pow(2).sum(), (q, k, v))
    torch.testing.assert_close(out, ref, rtol=0, atol=2e-6)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-5)


def test_explicit_attention_bf16_stays_bf16_and_close_to_fp32_sdpa():
    q, k, v = qkv(dtype=torch.bfloat16)
    mask = attention_mask(pad_mask(), False, 7, 7, torch.device("cpu"))
    out = explicit_attention(q, k, v, mask, 0.0, False)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 3e-2


def test_explicit_attention_with_dropout_is_the_formula_with_its_mask():
    """Same seed, same mask: the output is softmax weights with dropped entries zeroed, times v, / (1 - p),
    computed here in float64 from the definition."""
    q, k, v = qkv()
    p = 0.3
    torch.manual_seed(5)
    out = explicit_attention(q, k, v, None, p, False)
    torch.manual_seed(5)
    dropped = drop_mask(torch.Size([3, 4, 7, 7]), p, torch.device("cpu"))
    w = (q.double() @ k.double().transpose(-2, -1) / math.sqrt(16)).softmax(-1)
    ref = (w.masked_fill(dropped, 0) @ v.double()) / (1 - p)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5)
    assert 0 < dropped.sum() < dropped.numel()


def test_drop_mask_has_the_bernoulli_law_in_every_lane():
    """Drop rate p within 6 standard deviations overall, in even and odd elements (the two int32 halves of
    one 64-bit draw), no correlation between neighbours, and seeded by torch.manual_seed."""
    n, p = 1 << 22, 0.1
    torch.manual_seed(0)
    m = drop_mask(torch.Size([n]), p, torch.device("cpu"))
    sd = math.sqrt(p * (1 - p) / n)
    assert abs(m.float().mean().item() - p) < 6 * sd
    for lane in (m[0::2], m[1::2]):
        assert abs(lane.float().mean().item() - p) < 6 * sd * math.sqrt(2)
    both = (m[:-1] & m[1:]).float().mean().item()
    assert abs(both - p * p) < 6 * math.sqrt(p * p / n)
    torch.manual_seed(0)
    assert torch.equal(drop_mask(torch.Size([n]), p, torch.device("cpu")), m)
    odd = drop_mask(torch.Size([3, 5]), 0.5, torch.device("cpu"))
    assert odd.shape == (3, 5) and odd.dtype == torch.bool


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_keep_mask_is_the_complement_of_drop_mask_from_the_same_draws(dtype):
    shape = torch.Size([3, 5, 7])
    torch.manual_seed(3)
    keep = keep_mask(shape, 0.3, torch.device("cpu"), dtype)
    torch.manual_seed(3)
    dropped = drop_mask(shape, 0.3, torch.device("cpu"))
    assert keep.dtype == dtype and keep.shape == shape
    assert torch.equal(keep, (~dropped).to(dtype))


def test_dropout_scales_kept_values_and_zeroes_the_rest():
    x = torch.rand(1000, 64) + 1.0
    torch.manual_seed(1)
    y = dropout(x, 0.25, True)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] * (1 / 0.75), rtol=0, atol=0)
    assert abs(kept.float().mean().item() - 0.75) < 0.01
    assert dropout(x, 0.25, False) is x and dropout(x, 0.0, True) is x
    assert torch.equal(dropout(x, 1.0, True), torch.zeros_like(x))
    g = torch.autograd.grad(dropout(x.requires_grad_(), 0.5, True).sum(), x)[0]
    assert set(g.unique().tolist()) <= {0.0, 2.0}


@pytest.mark.parametrize("padded,causal,empty", [(False, False, False), (True, False, False), (False, True, False),
                                                  (True, True, True), (False, False, True)])
def test_last_layer_at_predicted_rows_equals_the_full_model_with_gradients(dictionary, padded, causal, empty):
    """Logits at masked positions (last layer run there only, queries packed per sentence) equal the full
    model's logits gathered there, and so do the gradients of every parameter; with padding, causal
    attention, and a sentence without predicted rows."""
    torch.manual_seed(0)
    model = build_model("xlm_tiny", dictionary, ["en", "fr"], encoder_layers=3).eval()
    x = torch.randint(dictionary.nspecial, len(dictionary) - 1, (3, 11), generator=torch.Generator().manual_seed(2))
    if padded:
        x[1, 8:] = dictionary.pad()
    chosen = (torch.arange(33).view(3, 11) % 4 == 1) & x.ne(dictionary.pad())
    chosen[0, 2:6] = True  # sentences with different numbers of rows
    if empty:
        chosen[2] = False
    langs = torch.tensor([0, 1, 0])
    part, _ = model(x, langs=langs, masked_tokens=chosen, causal=causal)
    part_grads = torch.autograd.grad(part.logsumexp(-1).sum(), list(model.parameters()), allow_unused=True)
    full, _ = model(x, langs=langs, causal=causal)
    full_grads = torch.autograd.grad(full[chosen].logsumexp(-1).sum(), list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(part, full[chosen], rtol=0, atol=1e-5)
    for a, b in zip(part_grads, full_grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def tied_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 50, (4, 6), generator=g)
    x = torch.randn(4, 6, 16, generator=g)
    w = torch.randn(50, 16, generator=g).requires_grad_()
    b = torch.randn(50, generator=g).requires_grad_()
    return tokens, x, w, b


@pytest.mark.parametrize("bf16", [False, True])
def test_tied_output_equals_f_linear_with_gradients(bf16):
    """Values and the gradients of input, weight (tied with an embedding, as in the model) and bias equal
    F.linear's, in fp32 and under bf16 autocast (where both compute in bf16)."""
    results = []
    for layer in (F.linear, tied_output):
        tokens, x, w, b = tied_inputs()
        x.requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = layer(x + F.embedding(tokens, w), w, b)
        grads = torch.autograd.grad(out.float().pow(2).sum(), (x, w, b))
        results.append((out, grads))
    (ref, ref_grads), (out, grads) = results
    assert out.dtype == ref.dtype == (torch.bfloat16 if bf16 else torch.float32)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    for got, want in zip(grads, ref_grads):
        assert got.dtype == want.dtype and got.is_contiguous()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_tied_output_weight_gradient_is_accumulated_in_place():
    """The embedding's gradient is added into the output layer's (add_), not into a new (V, C) tensor, the
    cost F.linear's transposed gradient brings (checked against F.linear, which does allocate)."""
    from torch.profiler import profile

    def weight_adds(layer):
        tokens, x, w, b = tied_inputs()
        with profile(record_shapes=True) as prof:
            layer(x + F.embedding(tokens, w), w, b).sum().backward()
        return sorted(e.name for e in prof.events() if e.name in ("aten::add", "aten::add_")
                      and e.input_shapes and list(e.input_shapes[0]) == [50, 16])

    assert weight_adds(F.linear) == ["aten::add"]
    assert weight_adds(tied_output) == ["aten::add_"]
