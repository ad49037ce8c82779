"""``python -m fairseq_xlm.cli.plan EXPERIMENT``: an experiment of the paper, before the spend.

Prints its stages, each stage's ``fairseq-hydra-train`` command, the data-bin it expects, the disk it
needs and its GPU-hours, priced from FLOPs (the stage's composed config: model shape, tokens per update,
updates; ``configs/experiments.yaml``'s ``cost``: a stated GPU peak and efficiency, an estimate, not a GPU
measurement). ``--run`` runs the stages (stamped: a rerun skips finished ones; ``--launcher
submitit_slurm`` submits each through hydra's submitit launcher); ``--twin`` takes the twin instead (the
same configs with the sizes of ``twin_sizes``, on a Bible data-bin; with ``--run``, all its stages in this
one process).

    python -m fairseq_xlm.cli.plan --list
    python -m fairseq_xlm.cli.plan xnli15_mlm_tlm --data DATA --save SAVE [--gpus 8] [--run]
    python -m fairseq_xlm.cli.plan umt_enfr --twin --data data-bin/bible --save /tmp/twin --run
"""

import argparse
import json
import math
from dataclasses import asdict, dataclass
from typing import List, Optional

from . import experiments as E

# Attention context assumed for sentence-level tasks (MT): tokens of a sentence, about (the authors' data).
MT_SENTENCE_TOKENS = 32


@dataclass
class Cost:
    """What one stage needs: updates, tokens per GPU and update, FLOPs per token, GPU-hours, disk."""

    stage: str
    jobs: int
    gpus: int
    updates: int
    tokens_per_update: int
    flops_per_token: float
    params: int
    gpu_hours: float
    wall_hours: float
    checkpoint_gb: float


def _steps(text) -> List[str]:
    return [s for s in str(text or "").split(",") if s]


def _encoder_layer_flops(d: int, ffn: int, context: int) -> float:
    """Forward matmul FLOPs per token of one post-LN layer: 4 d x d projections, the FFN, scores and values."""
    return 8 * d * d + 4 * d * ffn + 4 * context * d


def stage_cost(cfg, stage: E.Stage, vocab: int, cost: dict, gpus: Optional[int] = None) -> Cost:
    """Price one stage from its composed config (see the module docstring); training = 3 x forward."""
    m, task = cfg.model, cfg.task
    d, layers, ffn = m.encoder_embed_dim, m.encoder_layers, m.encoder_ffn_embed_dim
    gpus = gpus or stage.gpus
    batch = cfg.dataset.batch_size
    embed = vocab * d + 512 * d
    encoder = layers * (4 * d * d + 2 * d * ffn)
    if task._name == "xlm_pretrain":
        context = task.tokens_per_sample
        tokens = batch * context if batch else cfg.dataset.max_tokens
        clm, mlm = _steps(task.clm_steps), _steps(task.mlm_steps)
        draws_clm = min(5, len([s for s in clm if "-" not in s])) + min(5, len([s for s in clm if "-" in s]))
        draws_mlm = min(5, len([s for s in mlm if "-" not in s])) + min(5, len([s for s in mlm if "-" in s]))
        body = layers * _encoder_layer_flops(d, ffn, context)
        # MLM / TLM: the output layer only at the 15 % predicted positions; CLM: at every position
        out = (draws_clm * 1.0 + draws_mlm * task.mask_prob) / max(1, draws_clm + draws_mlm) * 2 * d * vocab
        per_token = 3 * (body + out)
        params = embed + encoder
    elif task._name == "unsupervised_mt":
        dec_layers = m.get("decoder_layers") or layers
        tokens = cfg.dataset.max_tokens
        enc = layers * _encoder_layer_flops(d, ffn, MT_SENTENCE_TOKENS)
        dec = dec_layers * (_encoder_layer_flops(d, ffn, MT_SENTENCE_TOKENS) + 8 * d * d
                            + 4 * MT_SENTENCE_TOKENS * d)
        fwd = enc + dec + 2 * d * vocab
        ae, bt, mt = len(_steps(task.ae_steps)), len(_steps(task.bt_steps)), min(5, len(_steps(task.mt_steps)))
        # a back-translation step also generates its sources (greedy, no grad): one more forward
        per_token = (3 * fwd * (ae + mt) + 4 * fwd * bt) / max(1, ae + mt + bt)
        params = 2 * embed + encoder + dec_layers * (8 * d * d + 2 * d * ffn)
    elif task._name == "xnli":
        context = stage.tokens or 128
        tokens = batch * context
        per_token = 3 * layers * _encoder_layer_flops(d, ffn, context)
        params = embed + encoder
    else:
        raise SystemExit(f"error: stage {stage.name}: no cost model for task {task._name}")
    updates = cfg.optimization.max_update
    if not updates:
        # epochs of task.epoch_size examples, batch_size per GPU (xnli)
        updates = math.ceil(cfg.optimization.max_epoch * task.epoch_size / (batch * gpus))
    jobs = len(stage.sweep[1]) if stage.sweep else 1
    flops = jobs * updates * gpus * tokens * per_token
    gpu_hours = flops / (cost["peak_tflops"] * 1e12 * cost["efficiency"]) / 3600
    ckpt_gb = jobs * params * cost["checkpoint_bytes_per_param"] * cost["checkpoints_kept"] / 1e9
    # sweep jobs run side by side, each on its own gpus
    return Cost(stage.name, jobs, gpus, updates, tokens, per_token, params, gpu_hours, gpu_hours / (gpus * jobs), ckpt_gb)


def _fmt_hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 10 else f"{h:.2g}"


def plan(name: str, data: str, save: str, cdir, gpus: Optional[int] = None, launcher: Optional[str] = None,
         twin: bool = False) -> dict:
    """The plan of experiment ``name`` as a dict (stages with commands and costs, data, totals)."""
    cat = E.load_catalogue(cdir)
    exp = E.experiment(cat, name)
    dataset = cat["datasets"][exp["data"]]
    stage_list = E.stages(cat, name, data, save, twin=twin)
    rows = []
    for stage in stage_list:
        row = {"name": stage.name, "config": stage.config, "command": E.shell(E.command(stage, cdir, launcher)),
               "save": stage.save}
        if not twin:  # a twin is not priced (its run composes each stage anyway)
            cfg = E.compose_cached(cdir, stage.config, tuple(stage.jobs()[0][1]))
            row["cost"] = asdict(stage_cost(cfg, stage, dataset["vocab"], cat["cost"], gpus))
        rows.append(row)
    out = {"experiment": name, "title": exp["title"], "paper": exp["paper"], "twin": twin,
           "data": {"name": exp["data"], **dataset}, "stages": rows, "cost_model": cat["cost"]}
    if not twin:
        out["gpu_hours"] = sum(r["cost"]["gpu_hours"] for r in rows)
        out["wall_hours"] = sum(r["cost"]["wall_hours"] for r in rows)
        out["disk_gb"] = dataset["disk_gb"] + sum(r["cost"]["checkpoint_gb"] for r in rows)
    return out


def render(p: dict) -> str:
    """The plan as text: what a person reads before submitting it."""
    lines = [f"# {p['experiment']}: {p['title']}" + (" (twin)" if p["twin"] else ""), f"paper: {p['paper']}", ""]
    d = p["data"]
    if p["twin"]:
        lines += ["data: a Bible data-bin (the twin's languages stand for the paper's, see configs/experiments.yaml)", ""]
    else:
        lines += [f"data: DATA/{d['name']}: {d['what']}", f"  layout: {d['layout']}",
                  f"  vocabulary: {d['vocab']:,}; disk: ~{d['disk_gb']} GB (estimate)", ""]
    for i, row in enumerate(p["stages"], 1):
        lines.append(f"stage {i}: {row['name']} (configs/{row['config']}.yaml) -> {row['save']}")
        lines.append(f"  {row['command']}")
        c = row.get("cost")
        if c:
            jobs = f"{c['jobs']} jobs x " if c["jobs"] > 1 else ""
            lines.append(f"  {jobs}{c['updates']:,} updates x {c['gpus']} GPU(s) x {c['tokens_per_update']:,} tokens;"
                         f" {c['flops_per_token'] / 1e9:.2f} GFLOP/token; {c['params'] / 1e6:.0f} M parameters;"
                         f" ~{_fmt_hours(c['gpu_hours'])} GPU-hours (~{_fmt_hours(c['wall_hours'])} h on"
                         f" {c['gpus']} GPU(s){' per job' if c['jobs'] > 1 else ''});"
                         f" checkpoints ~{c['checkpoint_gb']:.1f} GB")
        lines.append("")
    if not p["twin"]:
        m = p["cost_model"]
        lines += [f"total: ~{_fmt_hours(p['gpu_hours'])} GPU-hours, ~{_fmt_hours(p['wall_hours'])} h wall (stages in"
                  f" turn, sweep jobs in parallel), disk ~{p['disk_gb']:.0f} GB",
                  f"GPU-hours are an ESTIMATE from FLOPs, not a GPU measurement: {m['gpu']} at {m['peak_tflops']}"
                  f" TFLOP/s x {m['efficiency']:.0%} assumed efficiency (our step reached 79 % of the CPU's matmul"
                  " peak, docs/benchmarks.md); updates are the configs' caps (the authors stop earlier on"
                  " patience). Override with --peak-tflops / --efficiency, or measure with"
                  " bench/pretrain_throughput.py on the GPU."]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", nargs="?", help="an experiment of configs/experiments.yaml")
    parser.add_argument("--list", action="store_true", help="list the experiments and the paper's numbers")
    parser.add_argument("--data", default="DATA", help="the folder holding the experiment's data-bin(s)")
    parser.add_argument("--save", default="SAVE", help="where each stage writes (SAVE/STAGE)")
    parser.add_argument("--config-dir", default=None, help="the config folder (default: the checkout's configs/)")
    parser.add_argument("--gpus", type=int, default=None, help="GPUs per stage (default: the catalogue's)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's peak (default: the catalogue's)")
    parser.add_argument("--efficiency", type=float, default=None, help="share of the peak a step reaches")
    parser.add_argument("--launcher", default=None, help="hydra launcher, e.g. submitit_slurm or submitit_local")
    parser.add_argument("--twin", action="store_true", help="the twin: the same configs, tiny, on Bible data")
    parser.add_argument("--run", action="store_true", help="run the stages (stamped; finished ones are skipped)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    args = parser.parse_args(argv)
    cdir = E.config_dir(args.config_dir)
    cat = E.load_catalogue(cdir)
    if args.list or not args.experiment:
        for name, exp in cat["experiments"].items():
            print(f"{name:18s} {exp['title']}  [{exp['paper']}]")
        return
    if any(v is not None and v <= 0 for v in (args.peak_tflops, args.efficiency)):
        raise SystemExit("error: --peak-tflops and --efficiency must be positive")
    p = plan(args.experiment, args.data, args.save, cdir, args.gpus, args.launcher, args.twin)
    if args.peak_tflops or args.efficiency:
        p = _reprice(p, args.peak_tflops, args.efficiency)
    print(json.dumps(p, indent=1) if args.json else render(p))
    if args.run:
        if "DATA" == args.data or "SAVE" == args.save:
            raise SystemExit("error: --run needs --data and --save")
        stage_list = E.stages(cat, args.experiment, args.data, args.save, twin=args.twin)
        if args.twin and args.launcher is None:
            E.run_in_process(stage_list, cdir)
        else:
            E.run_commands(stage_list, cdir, args.launcher)


def _reprice(p: dict, peak: Optional[float], eff: Optional[float]) -> dict:
    """The plan with GPU-hours for another peak or efficiency (hours scale inversely with both)."""
    m = dict(p["cost_model"])
    scale = (m["peak_tflops"] * m["efficiency"]) / ((peak or m["peak_tflops"]) * (eff or m["efficiency"]))
    m.update(peak_tflops=peak or m["peak_tflops"], efficiency=eff or m["efficiency"], gpu="as given")
    for row in p["stages"]:
        row["cost"]["gpu_hours"] *= scale
        row["cost"]["wall_hours"] *= scale
    p.update(cost_model=m, gpu_hours=p["gpu_hours"] * scale, wall_hours=p["wall_hours"] * scale)
    return p


if __name__ == "__main__":
    main()
