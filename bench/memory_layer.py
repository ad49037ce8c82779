"""Cost per token of a product-key memory layer against the feed-forward block it replaces.

One step = forward and backward (input and parameter gradients) of one block on TOKENS x DIM states. Rows:
the memory (ours, and the authors' HashingMemory on the same weights when their code is found), and two
GELU FFNs (DIM -> H -> DIM): one with the memory's parameter count, one with its active-parameter count
(what one token touches: query network, every half-key it is scored against, heads x knn value rows).
Steps alternate between the rows; the table gives the median CPU time (one thread) per 1000 tokens, in fp32
and under bf16 autocast (fp32 weights), and the ratio to our memory in the same precision.

    OMP_NUM_THREADS=1 python bench/memory_layer.py [--steps 9]      # the table in docs/memory-layers.md

The authors' code is looked for in ../shared/anchors/xlm-authors (or $XLM_SRC); without it their row is left out.
"""

import argparse
import os
import statistics
import sys
import time
from types import SimpleNamespace

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fairseq_xlm.models.memory import ProductKeyMemory  # noqa: E402
from fairseq_xlm.models.memory_config import MemoryConfig, memory_spec  # noqa: E402

AUTHORS = os.environ.get("XLM_SRC") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                                                    "anchors", "xlm-authors")
DIM, TOKENS = 256, 1024
MEM = dict(mem_n_keys=128, mem_k_dim=128, mem_heads=4, mem_knn=32)  # 16384 slots, query 256 -> 4 x 128


class Ffn(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(x)))


def authors_memory(ours: ProductKeyMemory, cfg: MemoryConfig):
    """Their HashingMemory with our options and weights, or None without their code."""
    if not os.path.isdir(os.path.join(AUTHORS, "xlm")):
        return None
    sys.path.insert(0, AUTHORS)
    from xlm.model.memory import HashingMemory

    params = SimpleNamespace(**{k: v for k, v in vars(cfg).items()})
    for name in ("keys_learn", "use_different_keys", "query_bias", "query_net_learn", "score_softmax"):
        setattr(params, "mem_" + name, not getattr(cfg, "mem_no_" + name))
    params.mem_query_layer_sizes = [0, 0]
    params.mem_product_quantization, params.n_indices = True, cfg.mem_n_keys ** 2
    params.mem_size = params.n_indices
    theirs = HashingMemory.build(DIM, DIM, params)
    theirs.load_state_dict(ours.state_dict())
    return theirs


def active_params(cfg: MemoryConfig, query: int) -> int:
    """Parameters one token uses: query network, 2 x n_keys half-keys per head, heads x knn value rows."""
    return query + cfg.mem_heads * 2 * cfg.mem_n_keys * cfg.mem_k_dim // 2 + cfg.mem_heads * cfg.mem_knn * DIM


def cpu_step(module: nn.Module, x: torch.Tensor, grad: torch.Tensor, bf16: bool) -> float:
    """CPU seconds of forward + backward; ``grad`` is a dense output gradient, as a loss gives (a sum's
    would be a stride-0 expansion, which sends torch's bag backward to a slow path)."""
    x = x.detach().requires_grad_()
    start = time.process_time()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = module(x)
    out.backward(grad.to(out.dtype))
    elapsed = time.process_time() - start
    module.zero_grad(set_to_none=True)
    return elapsed


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=9)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = MemoryConfig(use_memory=True, **MEM)
    ours = ProductKeyMemory(DIM, memory_spec(cfg, DIM))
    n_mem = sum(p.numel() for p in ours.parameters())
    query = sum(p.numel() for p in ours.query_proj.parameters())
    n_active = active_params(cfg, query)
    rows = {"memory (ours)": ours}
    theirs = authors_memory(ours, cfg)
    if theirs is not None:
        rows["memory (authors')"] = theirs
    hidden_params, hidden_active = round((n_mem - DIM) / (2 * DIM + 1)), round((n_active - DIM) / (2 * DIM + 1))
    rows[f"FFN, same parameters (H={hidden_params})"] = Ffn(DIM, hidden_params)
    rows[f"FFN, same active parameters (H={hidden_active})"] = Ffn(DIM, hidden_active)
    x, grad = torch.randn(TOKENS, DIM), torch.randn(TOKENS, DIM)
    times = {(name, bf16): [] for name in rows for bf16 in (False, True)}
    for bf16 in (False, True):
        for name, module in rows.items():  # warm-up
            cpu_step(module, x, grad, bf16)
        for _ in range(args.steps):
            for name, module in rows.items():
                times[(name, bf16)].append(cpu_step(module, x, grad, bf16))
    print(f"memory: {MEM}, {n_mem / 1e6:.2f} M parameters, {n_active / 1e3:.0f} k active per token; "
          f"{TOKENS} tokens x d={DIM}, forward + backward, 1 thread, median of {args.steps} steps (CPU time)")
    if theirs is None:
        print(f"(the authors' code is not at {AUTHORS}: their row is left out)")
    print("\n| block | params | fp32 ms / 1k tokens | x ours | bf16 ms / 1k tokens | x ours |")
    print("|---|---|---|---|---|---|")
    ref = {bf16: statistics.median(times[("memory (ours)", bf16)]) for bf16 in (False, True)}
    for name, module in rows.items():
        cells = []
        for bf16 in (False, True):
            t = statistics.median(times[(name, bf16)])
            cells += [f"{1000 * t * 1000 / TOKENS:.2f}", f"{t / ref[bf16]:.2f}"]
        n = sum(p.numel() for p in module.parameters())
        print(f"| {name} | {n / 1e6:.2f} M | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
