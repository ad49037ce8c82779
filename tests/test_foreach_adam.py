"""ForeachAdam (fairseq_xlm/optim/foreach_adam.py): fairseq's CPU Adam step, bit for bit, with foreach ops.

The oracle is fairseq's own ``Adam`` run on a copy of the same parameters and gradients."""

import copy

import pytest
import torch
from fairseq.optim.adam import Adam, FairseqAdam, FairseqAdamConfig
from torch.optim.optimizer import register_optimizer_step_post_hook

from fairseq_xlm.optim.foreach_adam import ForeachAdam, use_foreach_adam
from fairseq_xlm.tasks.scheduled import ScheduledStepsTask

SHAPES = [(30, 8), (8,), (8, 8), (3, 8)]


def make_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in SHAPES]


def set_grads(params, step):
    """Random gradients; the last parameter gets none at every third step (its step count then lags)."""
    g = torch.Generator().manual_seed(1000 + step)
    for k, p in enumerate(params):
        p.grad = None if (k == len(params) - 1 and step % 3 == 0) else torch.randn(p.shape, generator=g)


def fairseq_adam(params, weight_decay=0.0):
    cfg = FairseqAdamConfig(lr=[0.004], adam_betas="(0.9, 0.98)", adam_eps=1e-8, weight_decay=weight_decay)
    return FairseqAdam(cfg, params)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_same_weights_and_state_as_fairseq_adam(weight_decay):
    ours_params, ref_params = make_params(), make_params()
    ours, ref = fairseq_adam(ours_params, weight_decay), fairseq_adam(ref_params, weight_decay)
    for step in range(1, 13):
        set_grads(ours_params, step)
        set_grads(ref_params, step)
        if step == 2:  # switched after a step of fairseq's Adam, as a task does (state carried over)
            assert use_foreach_adam(ours) and type(ours._optimizer) is ForeachAdam
        if step == 7:
            ours.set_lr(0.001)  # the LR scheduler's path
            ref.set_lr(0.001)
        ours.step()
        ref.step()
    assert type(ref._optimizer) is Adam
    for a, b in zip(ours_params, ref_params):
        assert torch.equal(a, b)
    ours_state, ref_state = ours.state_dict()["state"], ref.state_dict()["state"]
    assert ours_state.keys() == ref_state.keys()
    for k in ref_state:
        assert ours_state[k]["step"] == ref_state[k]["step"]
        assert torch.equal(ours_state[k]["exp_avg"], ref_state[k]["exp_avg"])
        assert torch.equal(ours_state[k]["exp_avg_sq"], ref_state[k]["exp_avg_sq"])
    assert ours_state[len(SHAPES) - 1]["step"] == 8  # the lagging parameter kept its own count
    # a checkpoint of one loads into the other, and a run resumed from it switches and steps as fairseq's
    resumed_params, ref_resumed_params = make_params(), make_params()
    resumed, ref_resumed = fairseq_adam(resumed_params), fairseq_adam(ref_resumed_params)
    for opt, params in ((resumed, resumed_params), (ref_resumed, ref_resumed_params)):
        opt.load_state_dict(copy.deepcopy(ours.state_dict()))
        set_grads(params, 13)
    assert use_foreach_adam(resumed)
    resumed.step()
    ref_resumed.step()
    assert resumed.state_dict()["state"][0]["step"] == 13
    for a, b in zip(resumed_params, ref_resumed_params):
        assert torch.equal(a, b)


def test_task_step_switches_and_runs_step_hooks():
    """A task's optimizer_step runs ForeachAdam, and torch's global step hooks (frozen_rows uses one) fire."""
    params = make_params()
    opt = fairseq_adam(params)
    calls = []
    handle = register_optimizer_step_post_hook(lambda optimizer, *_: calls.append(type(optimizer)))
    try:
        for step in (1, 2):
            set_grads(params, step)
            ScheduledStepsTask.optimizer_step(None, opt, None, step)
    finally:
        handle.remove()
    assert calls == [ForeachAdam, ForeachAdam]


def test_other_optimizers_left_alone():
    params = make_params()
    cfg = FairseqAdamConfig(lr=[0.004], adam_betas="(0.9, 0.98)")
    amsgrad = FairseqAdam(cfg, params)
    amsgrad._optimizer = Adam(params, amsgrad=True)
    assert not use_foreach_adam(amsgrad) and type(amsgrad._optimizer) is Adam
    half = FairseqAdam(cfg, [torch.nn.Parameter(torch.zeros(4, dtype=torch.bfloat16))])
    assert not use_foreach_adam(half) and type(half._optimizer) is Adam
    assert not use_foreach_adam(torch.optim.SGD(make_params(), lr=0.1))
