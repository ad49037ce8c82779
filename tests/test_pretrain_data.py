"""Pretraining samples with answers known by hand: TLM layout, masking statistics, frequency-smoothed
masking, alpha-smoothed step sampling, step-language parsing and lambda schedules."""

import math
from collections import Counter, OrderedDict

import numpy as np
import pytest
import torch
from fairseq.data import Dictionary, ListDataset

import fairseq_xlm  # noqa: F401
from fairseq_xlm.data.lm_datasets import (
    CausalTargetDataset,
    MonoStreamDataset,
    TlmPairDataset,
    XlmMaskDataset,
    collate_lm,
    mask_scores,
)
from fairseq_xlm.data.schedule import Draw, EpochSchedule, StepBatches, StepGroup, smoothed_probs
from fairseq_xlm.data.step_dataset import StepDataset
from fairseq_xlm.schedules import parse_schedule
from fairseq_xlm.tasks.xlm_pretrain import parse_steps, step_name


def make_dict(counts):
    d = Dictionary()
    for i, c in enumerate(counts):
        d.add_symbol(f"w{i}", n=c)
    d.add_symbol("<mask>")
    return d


class Sized(ListDataset):
    """A list of token tensors with fairseq's ``sizes``."""

    def __init__(self, tensors):
        super().__init__(tensors, np.array([len(t) for t in tensors]))


def test_tlm_pair_layout_by_hand():
    eos = 2
    src = Sized([torch.tensor([10, 11, eos])])
    tgt = Sized([torch.tensor([20, 21, 22, eos])])
    item = TlmPairDataset(src, tgt, src_lang_id=0, tgt_lang_id=3, eos=eos)[0]
    assert item["tokens"].tolist() == [eos, 10, 11, eos, eos, 20, 21, 22, eos]
    assert item["positions"].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4]
    assert item["langs"].tolist() == [0, 0, 0, 0, 3, 3, 3, 3, 3]
    assert TlmPairDataset(src, tgt, 0, 3, eos).sizes.tolist() == [9]
    with pytest.raises(ValueError, match="not line-aligned"):
        TlmPairDataset(src, Sized([]), 0, 1, eos)


def test_tlm_masking_covers_both_sides_and_collates_positions():
    d = make_dict([5] * 30)
    eos = d.eos()
    src = Sized([torch.tensor(list(range(4, 24)) + [eos])])
    tgt = Sized([torch.tensor(list(range(10, 30)) + [eos])])
    masked = XlmMaskDataset(TlmPairDataset(src, tgt, 0, 1, eos), d, d.index("<mask>"), seed=1, mask_prob=0.5)
    item = masked[0]
    target = item["target"]
    assert (target[:22] != d.pad()).any() and (target[22:] != d.pad()).any()
    batch = collate_lm([item, item], d.pad(), causal=False, step="tlm_en-es")
    net = batch["net_input"]
    assert net["positions"][0].tolist() == list(range(22)) + list(range(22))
    assert net["langs"][1].tolist() == [0] * 22 + [1] * 22
    assert batch["step"] == "tlm_en-es" and net["causal"] is False


def test_mask_rate_and_80_10_10_split_within_statistical_bounds():
    d = make_dict([10] * 200)
    mask = d.index("<mask>")
    n_items, length = 400, 256
    g = torch.Generator().manual_seed(0)
    items = [torch.randint(d.nspecial, mask, (length,), generator=g) for _ in range(n_items)]
    ds = XlmMaskDataset(MonoStreamDataset(Sized(items), lang_id=0), d, mask, seed=5)
    chosen = to_mask = unchanged = random = 0
    for i in range(n_items):
        out = ds[i]
        pred = out["target"] != d.pad()
        chosen += int(pred.sum())
        to_mask += int((out["source"][pred] == mask).sum())
        unchanged += int((out["source"][pred] == items[i][pred]).sum())
        random += int(((out["source"] != items[i]) & (out["source"] != mask)).sum())
        assert ((out["source"] != items[i]) <= pred).all()  # nothing changes outside the chosen positions
        torch.testing.assert_close(out["target"][pred], items[i][pred])
    total = n_items * length
    # binomial bounds at ~5 standard deviations
    assert abs(chosen / total - 0.15) < 5 * math.sqrt(0.15 * 0.85 / total)
    for count, p in ((to_mask, 0.8), (unchanged, 0.1 + 0.1 / 200), (random, 0.1 - 0.1 / 200)):
        assert abs(count / chosen - p) < 5 * math.sqrt(p * (1 - p) / chosen) + 1e-3, (count / chosen, p)
    # random replacements never use special symbols or <mask>
    assert ds.random_ids.min() >= d.nspecial and mask not in ds.random_ids


def test_masking_is_deterministic_per_seed_epoch_and_index():
    d = make_dict([1] * 50)
    items = [torch.arange(4, 54)]
    a = XlmMaskDataset(MonoStreamDataset(Sized(items), 0), d, d.index("<mask>"), seed=3)
    b = XlmMaskDataset(MonoStreamDataset(Sized(items), 0), d, d.index("<mask>"), seed=3)
    assert torch.equal(a[0]["source"], b[0]["source"])
    b.set_epoch(2)
    assert not torch.equal(a[0]["target"], b[0]["target"])


def test_frequency_smoothed_masking_prefers_rare_tokens_as_the_formula_says():
    # w0 is 100x more frequent than w1: with alpha 0.5 each w1 is 10x as likely to be chosen as each w0.
    d = make_dict([10000, 100])
    common, rare, mask = d.index("w0"), d.index("w1"), d.index("<mask>")
    scores = mask_scores(d, 0.5, mask)
    assert scores[common] == pytest.approx(0.01) and scores[rare] == pytest.approx(0.1)
    assert scores[: d.nspecial].sum() == 0 and scores[mask] == 0
    seq = torch.tensor([common] * 50 + [rare] * 50 + [d.eos()] * 4)
    ds = XlmMaskDataset(MonoStreamDataset(Sized([seq] * 300), 0), d, mask, seed=0, sample_alpha=0.5)
    hits = Counter()
    for i in range(300):
        target = ds[i]["target"]
        assert int((target != d.pad()).sum()) == math.ceil(0.15 * len(seq))  # exactly ceil(p * n)
        assert (target[100:] == d.pad()).all()  # specials are never predicted
        hits.update(target[target != d.pad()].tolist())
    # sampling without replacement flattens the 10:1 ratio; it stays far above the uniform 1:1
    assert hits[rare] / hits[common] > 4
    uniform = XlmMaskDataset(MonoStreamDataset(Sized([seq] * 300), 0), d, mask, seed=0)
    u = Counter(t for i in range(300) for t in uniform[i]["target"].tolist() if t != d.pad())
    assert 0.7 < u[rare] / u[common] < 1.4


def test_causal_targets_are_next_tokens():
    item = CausalTargetDataset(MonoStreamDataset(Sized([torch.tensor([5, 6, 7, 2])]), 1), pad=1)[0]
    assert item["source"].tolist() == [5, 6, 7, 2]
    assert item["target"].tolist() == [6, 7, 2, 1]
    assert collate_lm([item], 1, causal=True)["net_input"]["causal"] is True


def test_smoothed_probs_by_hand():
    np.testing.assert_allclose(smoothed_probs([900, 100], 0.5), [0.75, 0.25])
    np.testing.assert_allclose(smoothed_probs([900, 100], 1.0), [0.9, 0.1])
    np.testing.assert_allclose(smoothed_probs([900, 100], 0.0), [0.5, 0.5])
    assert smoothed_probs([900, 100], -1) is None  # the authors' -1: uniform draws
    with pytest.raises(ValueError):
        smoothed_probs([10, 0], 0.5)


def step_dataset(sizes_per_step):
    steps, collaters, costs = OrderedDict(), {}, {}
    for name, (n, size) in sizes_per_step.items():
        steps[name] = CausalTargetDataset(MonoStreamDataset(Sized([torch.full((size,), 7)] * n), 0), pad=1)
        collaters[name] = lambda items, name=name: collate_lm(items, 1, False, name)
        costs[name] = np.full(n, size)
    return StepDataset(steps, collaters, costs)


def test_language_sampling_matches_alpha_smoothed_probabilities():
    # sentences 900 vs 100 -> q = (0.75, 0.25) at alpha 0.5; the only pair is drawn once per iteration
    ds = step_dataset({"mlm_en": (900, 10), "mlm_es": (100, 10), "tlm_en-es": (52, 10)})
    groups = [StepGroup([0, 1], True, smoothed_probs([900, 100], 0.5)), StepGroup([2], True)]
    streams = [StepBatches(k, ds.costs[n], ds.keep[n], None, 4, True, 1, 1) for k, n in enumerate(ds.names)]
    batches = EpochSchedule(groups, streams, lambda k, it: 1.0, seed=1).batches(epoch=1, iterations=500)
    assert all(len(b) == 4 and len({d.step for d in b}) == 1 for b in batches)
    per_iteration = Counter(b[0].iteration for b in batches)
    assert set(per_iteration.values()) == {3}  # min(5, 2) monolingual draws + 1 pair draw
    counts = Counter(ds.names[b[0].step] for b in batches)
    draws = counts["mlm_en"] + counts["mlm_es"]
    assert counts["tlm_en-es"] == 500 and draws == 1000
    assert abs(counts["mlm_en"] / draws - 0.75) < 5 * math.sqrt(0.75 * 0.25 / draws)
    valid = ds.validation_batches(None, 8)  # 1052 samples: not a multiple of 8, none lost
    assert sorted((d.step, d.index) for b in valid for d in b) == \
        sorted((k, i) for k, n in enumerate(ds.names) for i in range(len(ds.steps[n])))


def test_collater_makes_one_step_batch_with_its_iteration():
    ds = step_dataset({"mlm_en": (3, 5), "tlm_en-es": (3, 8)})
    batch = ds.collater([ds[Draw(1, i, 1, 0, 7)] for i in (0, 2)])
    assert batch["step"] == "tlm_en-es" and batch["iteration"] == 7
    assert batch["net_input"]["src_tokens"].shape == (2, 8)
    with pytest.raises(RuntimeError, match="mixes steps"):
        ds.collater([ds[Draw(0, 0, 1, 0, 7)], ds[Draw(1, 0, 1, 0, 7)]])
    assert ds.collater([]) == {}


def test_step_language_parsing_and_errors():
    langs = ["en", "es", "ny"]
    assert parse_steps("en, es,en-es", langs, "--mlm-steps") == [("en", None), ("es", None), ("en", "es")]
    assert [step_name("mlm", "en", None), step_name("mlm", "en", "es"), step_name("clm", "es", None)] == \
        ["mlm_en", "tlm_en-es", "clm_es"]
    for bad, msg in (("en,fr", r"\['fr'\] .* not in --langs en,es,ny"), ("en-en", "with itself"),
                     ("en,en", "twice"), ("en-es-ny", "invalid step")):
        with pytest.raises(ValueError, match=msg):
            parse_steps(bad, langs, "--mlm-steps")


def test_lambda_schedules():
    fn = parse_schedule("0:1,10000:0.1", "--lambda-mlm")
    assert fn(0) == 1 and fn(5000) == pytest.approx(0.55) and fn(10000) == pytest.approx(0.1)
    assert fn(50000) == pytest.approx(0.1)
    assert parse_schedule("0.5", "--lambda-clm")(123) == 0.5
    for bad in ("x", "10:1,5:0", "0:-1"):
        with pytest.raises(ValueError, match="--lambda-mlm"):
            parse_schedule(bad, "--lambda-mlm")
