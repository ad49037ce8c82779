"""Greedy decoding with preallocated K/V buffers (fairseq_xlm.data.greedy_decoding, back-translation's default):
the same tokens as fairseq's SequenceGenerator(beam_size=1), as the decoder's own incremental state and as
the authors' TransformerModel.generate given the same weights (their code from ../shared/anchors), on random
models whose hypotheses run to the length limit and whose hypotheses end at varied lengths."""

import copy
import importlib.util
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from fairseq_xlm.data.backtranslation import beam_decode, greedy_decode, max_output_len
from fairseq_xlm.data.greedy_decoding import greedy_static_cache

REPO = Path(__file__).resolve().parents[1]
AUTHORS = REPO.parent / "shared" / "anchors" / "xlm-authors"


def load_bench():
    spec = importlib.util.spec_from_file_location("bt_generation", REPO / "bench" / "bt_generation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_bench()
    torch.set_num_threads(before)


def setting(bench, varied, seed=1):
    """A random xlm_mt (d=64, 2+2 layers, vocab 300), a batch of 12 sources (padded when ``varied``) and
    its net_input into language 1; </s> suppressed, or (``varied``) biased so that hypotheses end at varied
    lengths with a mean equal to the sources' mean."""
    args = Namespace(vocab=300, dim=64, layers=2, heads=4, batch=12, src_len=12, xlm_src=str(AUTHORS),
                     all_decoders=False)
    d, model = bench.make_model(args)
    model.eval()
    net_input = dict(bench.make_batch(d, args, 0, seed=seed, varied=varied)["net_input"])
    net_input.pop("prev_output_tokens")
    net_input["tgt_langs"] = torch.ones(args.batch, dtype=torch.long)
    if varied:
        mean = float((net_input["src_lengths"] - 1).float().mean())
        bench.set_eos_bias(model, d, bench.calibrate_eos_bias(model, d, net_input, mean))
    return args, d, model, net_input


def tokens(hyps):
    return [h.tolist() for h in hyps]


@pytest.mark.parametrize("varied", [False, True])
def test_static_cache_equals_sequence_generator_and_incremental_state(bench, varied):
    args, d, model, net_input = setting(bench, varied)
    limit = max_output_len(net_input["src_tokens"], 1.3, 3, model.max_decoder_positions())
    static = greedy_decode(model, net_input, 1.3, 3)
    assert tokens(static) == tokens(beam_decode(model, net_input, 1, 1.3, 3))
    assert tokens(static) == tokens(greedy_decode(model, net_input, 1.3, 3, cache="incremental"))
    assert all(h[-1] == d.eos() and d.eos() not in h[:-1].tolist() and d.pad() not in h.tolist() for h in static)
    lengths = [len(h) - 1 for h in static]
    if varied:  # finished sentences leave the batch early, others run to the limit (the forced </s>)
        assert min(lengths) < limit and max(lengths) == limit and len(set(lengths)) >= 3
    else:
        assert lengths == [limit] * args.batch
    # reading the finished rows every 3 steps (the accelerator setting) changes nothing
    assert tokens(greedy_static_cache(model, net_input, limit, check_every=3)) == tokens(static)
    # a smaller limit is obeyed
    short = greedy_static_cache(model, net_input, 4)
    assert [len(h) - 1 for h in short] == [min(n, 4) for n in lengths]
    assert all(s[:-1].tolist() == h[: len(s) - 1].tolist() for s, h in zip(short, static))


@pytest.mark.skipif(not (AUTHORS / "xlm").is_dir(), reason="the authors' code (../shared/anchors) is absent")
@pytest.mark.parametrize("varied", [False, True])
def test_static_cache_equals_the_authors_generate(bench, varied):
    args, d, model, net_input = setting(bench, varied, seed=2)
    theirs = bench.authors_decoder(model, d, args)(net_input["src_tokens"], net_input["src_langs"], 1)
    ours = greedy_decode(model, net_input, 1.3, 3)  # = their int(1.3 * len + 5) counting both </s>
    assert [h.tolist() for h in theirs] == [h[:-1].tolist() for h in ours]
    assert len({len(h) for h in ours}) >= (3 if varied else 1)


def test_static_cache_under_bf16_autocast(bench):
    args, d, model, net_input = setting(bench, True)
    limit = max_output_len(net_input["src_tokens"], 1.3, 3, model.max_decoder_positions())
    fp32 = greedy_decode(model, net_input, 1.3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = greedy_decode(model, net_input, 1.3, 3)
    assert all(h[-1] == d.eos() and len(h) <= limit + 1 and d.pad() not in h.tolist() for h in bf16)
    # bf16 rounding may flip near-ties, not most tokens
    agree = sum(a == b for x, y in zip(fp32, bf16) for a, b in zip(x.tolist(), y.tolist()))
    assert agree >= 0.8 * sum(len(h) for h in fp32)


def test_bad_calls(bench):
    _, _, model, net_input = setting(bench, False)
    with pytest.raises(ValueError, match="cache='static_'"):
        greedy_decode(model, net_input, cache="static_")
    model.train()
    with pytest.raises(ValueError, match="eval mode"):
        greedy_static_cache(model, net_input, 5)


def test_on_a_device_the_loop_reads_the_host_every_eight_steps(bench):
    """Under tests/virtual_device.py (CPU compute reported as another device, every host read recorded):
    the accelerator path (SDPA, finished rows read every 8 steps) gives the CPU's tokens, and the loop reads
    the host at most once per 8 steps plus once for the hypotheses' ends."""
    from virtual_device import VirtualDevice

    _, d, model, net_input = setting(bench, True)
    limit = max_output_len(net_input["src_tokens"], 1.3, 3, model.max_decoder_positions())
    expected = greedy_decode(model, net_input, 1.3, 3)
    with VirtualDevice() as dev:
        m = copy.deepcopy(model).to(dev.device)
        hyps = greedy_decode(m, {k: v.to(dev.device) for k, v in net_input.items()}, 1.3, 3)
    assert all(h.device == dev.device for h in hyps)
    assert [h.elem.tolist() for h in hyps] == tokens(expected)
    loop = [line for _, line in dev.syncs if "greedy_decoding.py" in line]
    assert 2 <= len(loop) <= (limit + 1) // 8 + 1
