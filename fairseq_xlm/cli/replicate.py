"""``make replicate``: the paper's orderings at small scale, arms x seeds as stamped jobs, run here or on a
cluster, gathered into REPLICATION.md and the paper's tables.

    python -m fairseq_xlm.cli.replicate run [RAW_DIR] [--stage N] [--stop-stage N] [--launcher local|slurm] ...
    python -m fairseq_xlm.cli.replicate report --dir OUT [--curve TITLE:GLOB:METRIC ...] [--settings TEXT]
    python -m fairseq_xlm.cli.replicate results --dir OUT [--out FILE]

``run`` reads the settings from the environment, with the names recipes/replicate.sh had (``QUICK=1``,
``SMOKE=1``, ``OUT``, ``SEEDS``, ``CLAIMS``, ``LANGS``, ``PAIR``, ``LOW``, ``TRAIN_LANG``, ``D_OBJECTIVE``,
``VERSES``, ``PARA_VERSES``, ``LOW_TRAIN``, ``VOCAB``, ``*_MAX_UPDATE``, ``*_LR``, ``JOBS``, ``DEVICE_FLAGS``;
docs/replicate.md); the flags choose where the jobs run. Finished jobs (their stamp OUT/runs/done/JOB exists)
are reused; a folder made with other settings is refused. ``report`` rewrites OUT/REPLICATION.md from the
records (OUT/results/*.tsv: ``claim measure arm seed value`` lines, one file per job) and ``results`` prints
the paper's tables, paper | ours per arm, from the same records (also while a study is running).
"""

import argparse
import os
import signal
import sys
from typing import Optional, Sequence

from fairseq_xlm.cli import setup_logging
from fairseq_xlm.atomic_lines import write_lines
from fairseq_xlm.cli.study import report
from fairseq_xlm.cli.study.jobs import Launcher, SettingsError, StudyError


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fairseq_xlm.cli.replicate", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the study (settings from the environment, see docs/replicate.md)")
    run.add_argument("raw", nargs="?", default="", metavar="RAW_DIR",
                     help="a raw folder in the prepare_pretrain.sh layout (default: the Bible corpus)")
    run.add_argument("--stage", type=int, default=int(os.environ.get("stage") or 1), help="first stage (1-7)")
    run.add_argument("--stop-stage", type=int, default=int(os.environ.get("stop_stage") or 7), help="last stage")
    run.add_argument("--launcher", choices=("local", "slurm"), default=os.environ.get("LAUNCHER") or "local",
                     help="local processes (JOBS at once) or one SLURM job per arm and seed, both through submitit "
                          "(env LAUNCHER)")
    run.add_argument("--jobs", type=int, default=None,
                     help="jobs at once (default: env JOBS, else min(cores, 4) locally, 64 on SLURM)")
    run.add_argument("--partition", default=None, help="SLURM partition")
    run.add_argument("--gpus-per-job", type=int, default=None,
                     help="GPUs of each job (default 0 with DEVICE_FLAGS=--cpu, else 1)")
    run.add_argument("--timeout-min", type=int, default=24 * 60, help="a job's time limit in minutes")
    run.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                     help="another submitit SLURM parameter, e.g. --slurm account=abc --slurm qos=high")
    rep = sub.add_parser("report", help="OUT/results/*.tsv -> OUT/REPLICATION.md (+ curves)")
    rep.add_argument("--dir", required=True, help="the study's folder (OUT)")
    rep.add_argument("--settings", default="", help="text put under the title (settings, commands, machine)")
    rep.add_argument("--curve", action="append", default=[], help="TITLE:GLOB:METRIC (GLOB relative to --dir)")
    res = sub.add_parser("results", help="the paper's tables: paper | ours per arm, from OUT/results/*.tsv")
    res.add_argument("--dir", required=True, help="the study's folder (OUT)")
    res.add_argument("--out", default=None, help="also write them to this file")
    return parser


def launcher_of(args, settings) -> Launcher:
    """The launcher of ``run``'s flags (and JOBS)."""
    jobs = args.jobs or (int(os.environ["JOBS"]) if os.environ.get("JOBS") else None)
    if jobs is None:
        jobs = settings.jobs if args.launcher == "local" else 64
    gpus = args.gpus_per_job
    if gpus is None:
        gpus = 0 if "--cpu" in settings.device_flags else 1
    extra = {}
    for item in args.slurm:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SettingsError(f"--slurm {item!r}: expected KEY=VALUE, e.g. account=abc")
        extra[key if key.startswith("slurm_") else f"slurm_{key}"] = value
    return Launcher(cluster=args.launcher, max_parallel=jobs, timeout_min=args.timeout_min, gpus_per_job=gpus,
                    partition=args.partition, extra=extra, poll_s=0.2 if args.launcher == "local" else 10.0)


def _stop(signum, frame):
    raise StudyError(f"stopped by signal {signum}")


def run_study(args) -> str:
    """``run``: the environment's settings, checked, then the stages."""
    from fairseq_xlm.cli.study import replication, settings as study_settings

    if not (1 <= args.stage <= 7 and 1 <= args.stop_stage <= 7):
        raise SettingsError(f"--stage {args.stage} --stop-stage {args.stop_stage}: stages are 1-7")
    s = study_settings.from_env(os.environ, args.raw)
    for line in s.warnings + study_settings.check_env(os.environ, os.path.join(s.root, "recipes")):
        print(f"warning: {line}", file=sys.stderr)
    launcher = launcher_of(args, s)
    # What every job inherits (submitit's local processes and SLURM jobs take this environment): the checkout
    # first on the path, one thread per job, and no second check of the variables by the recipes it runs.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [s.root, os.environ.get("PYTHONPATH")]))
    os.environ.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE",
                      FAIRSEQ_XLM_ENV_CHECKED="1")
    # SIGTERM (kill, a batch system's end of time) stops the runner as Ctrl-C does: running jobs are cancelled
    signal.signal(signal.SIGTERM, _stop)
    replication.run(s, launcher, args.stage, args.stop_stage, echo=lambda text: print(text, flush=True))
    return os.path.join(s.out, "REPLICATION.md")


def main(argv: Optional[Sequence[str]] = None):
    """CLI entry point; bad settings exit 2, a failed or refused study 1, each with one clear message."""
    args = get_parser().parse_args(argv)
    try:
        if args.command == "run":
            return run_study(args)
        if args.command == "results":
            text = report.paper_tables(args.dir)
            if args.out:
                write_lines(args.out, text.rstrip("\n").split("\n"))
            print(text, end="")
            return text
        plots = []
        for spec in args.curve:
            parts = spec.split(":")
            if len(parts) != 3:
                raise ValueError(f"--curve {spec!r}: expected TITLE:GLOB:METRIC")
            path = report.plot_curves(args.dir, *parts)
            if path:
                plots.append(path)
        text = report.build_report(args.dir, args.settings, plots)
        path = os.path.join(args.dir, "REPLICATION.md")
        write_lines(path, text.rstrip("\n").split("\n"))
        print(text, end="")
        return path
    except SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2)
    except (StudyError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    setup_logging()
    main(sys.argv[1:])
