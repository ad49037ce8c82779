"""The paper's experiments as stages of hydra configs: the catalogue (``configs/experiments.yaml``), each
stage's ``fairseq-hydra-train`` command, its twin (the same config with sizes overridden), and the runs.

A stage is one config file plus overrides; ``{databin}``, ``{save}`` and an experiment's ``vars`` (``{l1}``,
``{l2}``) are filled in here. A stage with ``sweep`` is one ``fairseq-hydra-train -m`` command, a
job per value. Runs are stamped: a finished stage (or sweep job) writes ``.stage.json`` beside its
checkpoints, and a rerun with the same config and overrides skips it.
"""

import functools
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from . import userdir

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
CATALOGUE = "experiments.yaml"
STAMP = ".stage.json"


@dataclass
class Stage:
    """One stage of an experiment: ``config`` (a file of the config dir) with ``overrides``; ``sweep`` is
    (key, values) for a ``-m`` stage; ``gpus`` its world size; ``tokens`` tokens per example (classification)."""

    experiment: str
    name: str
    config: str
    overrides: List[str]
    save: str
    sweep: Optional[Tuple[str, List[str]]] = None
    gpus: int = 1
    tokens: int = 0
    twin: bool = False

    def jobs(self) -> List[Tuple[str, List[str]]]:
        """(save_dir, overrides) of each job: one, or one per sweep value (job i in ``{save}/i``, as hydra's
        ``-m`` numbers them), each with its own ``checkpoint.save_dir``."""
        if self.sweep is None:
            return [(self.save, list(self.overrides))]
        key, values = self.sweep
        out = []
        for i, value in enumerate(values):
            where = os.path.join(self.save, str(i))
            out.append((where, [*self.overrides, f"{key}={value}",
                                f"checkpoint.save_dir={os.path.join(where, 'checkpoints')}"]))
        return out


def config_dir(path: Optional[str] = None) -> Path:
    """The config folder: ``path``, $FAIRSEQ_XLM_CONFIGS, or the checkout's ``configs/``."""
    found = Path(path or os.environ.get("FAIRSEQ_XLM_CONFIGS") or CONFIG_DIR)
    if not (found / CATALOGUE).is_file():
        raise SystemExit(f"error: {found / CATALOGUE}: no experiment catalogue (set --config-dir)")
    return found


def load_catalogue(cdir: Optional[Path] = None) -> dict:
    """``experiments.yaml`` of the config folder, as a dict."""
    with open(config_dir(cdir) / CATALOGUE) as f:
        return yaml.safe_load(f)


def experiment(catalogue: dict, name: str) -> dict:
    """One experiment's entry; an unknown name is an error listing the known ones."""
    known = catalogue["experiments"]
    if name not in known:
        raise SystemExit(f"error: unknown experiment '{name}'; known: {', '.join(known)}")
    return known[name]


def split_sweep(sweep: str) -> Tuple[str, List[str]]:
    """``"task.langs='ne','ne,hi'"`` -> ("task.langs", ["'ne'", "'ne,hi'"]), as hydra's -m parser reads it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    override = OverridesParser.create().parse_override(sweep)
    if not override.is_sweep_override():
        raise SystemExit(f"error: sweep '{sweep}' has one value; expected key=a,b,...")
    return override.get_key_element(), list(override.sweep_string_iterator())  # quoted values stay quoted


def stages(catalogue: dict, name: str, data: str, save: str, twin: bool = False) -> List[Stage]:
    """The stages of experiment ``name`` with ``{databin}``/``{save}``/vars filled in; ``twin``: plus each
    stage's twin sizes and language overrides (and its own sweep, if any)."""
    exp = experiment(catalogue, name)
    spec = exp.get("twin") or {}
    # the experiment's data-bin: DATA/NAME, or for a twin the given (Bible) data-bin itself
    fill = {"databin": data if twin else os.path.join(data, exp["data"]), "save": save, **(exp.get("vars") or {})}
    if twin:
        fill.update(spec.get("vars") or {})
    out = []
    for st in exp["stages"]:
        overrides = [o.format(**fill) for o in st.get("overrides", [])]
        sweep = st.get("sweep")
        if twin:
            extra = spec["stages"][st["name"]]
            for group in extra.get("size", []):
                overrides += catalogue["twin_sizes"][group]
            overrides += [o.format(**fill) for o in extra.get("overrides", [])]
            sweep = extra.get("sweep", sweep)
        out.append(Stage(name, st["name"], st["config"], overrides, os.path.join(save, st["name"]),
                         split_sweep(sweep) if sweep else None, int(st.get("gpus", 1)), int(st.get("tokens", 0)),
                         twin))
    return out


def command(stage: Stage, cdir: Path, launcher: Optional[str] = None) -> List[str]:
    """The ``fairseq-hydra-train`` command of a stage (``-m`` for a sweep or a launcher)."""
    cmd = ["fairseq-hydra-train"]
    multirun = stage.sweep is not None or launcher is not None
    if multirun:
        cmd.append("-m")
    cmd += ["--config-dir", str(cdir), "--config-name", stage.config, f"common.user_dir={userdir.path()}",
            *stage.overrides]
    if stage.sweep is not None:
        key, values = stage.sweep
        cmd += [f"{key}={','.join(values)}", f"hydra.sweep.dir={stage.save}"]
    elif launcher is not None:
        cmd += [f"hydra.sweep.dir={stage.save}"]
    if launcher is not None:
        cmd.append(f"hydra/launcher={launcher}")
    return cmd


def shell(cmd: Sequence[str]) -> str:
    """A command as one copyable shell line (hydra's quoted values in double quotes: "task.langs='en,fr'")."""
    def quote(arg: str) -> str:
        if "'" in arg and not any(c in arg for c in '"$`\\'):
            return f'"{arg}"'
        return shlex.quote(arg)

    return " ".join(quote(c) for c in cmd)


def compose(cdir: Path, config: str, overrides: Sequence[str]):
    """The config fairseq-hydra-train would run: the file with ``overrides``, checked against fairseq's
    schema and our task/model/criterion dataclasses (an unknown key or a bad value is an error here)."""
    from argparse import Namespace

    from fairseq.dataclass.initialize import add_defaults, hydra_init
    from fairseq.utils import import_user_module
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra

    import_user_module(Namespace(user_dir=userdir.path()))
    hydra_init(config)  # fairseq's schema under the config's name, as fairseq-hydra-train stores it
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(Path(cdir).resolve()), version_base=None):
            cfg = hydra_compose(config, overrides=[f"common.user_dir={userdir.path()}", *overrides])
    finally:
        # hydra copies every stored config at each compose: drop this one's schema again
        ConfigStore.instance().repo.pop(f"{config}.yaml", None)
    add_defaults(cfg)
    return cfg


@functools.lru_cache(maxsize=None)
def compose_cached(cdir: Path, config: str, overrides: Tuple[str, ...]):
    """``compose``, once per (folder, config, overrides) in a process: for readers (the plan), not runs."""
    return compose(cdir, config, overrides)


def _stamp(save: str) -> Path:
    return Path(save) / STAMP


def done(save: str, config: str, overrides: Sequence[str]) -> Optional[dict]:
    """The stamp of a finished job with this config and these overrides, or None."""
    path = _stamp(save)
    if not path.is_file():
        return None
    stamp = json.loads(path.read_text())
    return stamp if stamp.get("config") == config and stamp.get("overrides") == list(overrides) else None


def write_stamp(save: str, config: str, overrides: Sequence[str], **extra) -> dict:
    """Record a finished job (written to a .tmp file, then renamed)."""
    Path(save).mkdir(parents=True, exist_ok=True)
    stamp = {"config": config, "overrides": list(overrides), **extra}
    tmp = _stamp(save).with_suffix(".tmp")
    tmp.write_text(json.dumps(stamp, indent=1) + "\n")
    os.replace(tmp, _stamp(save))
    return stamp


def run_in_process(stage_list: Sequence[Stage], cdir: Path, log=print) -> Dict[str, list]:
    """Run every job of ``stage_list`` in this process, in order (what a twin does: one interpreter, one
    import of torch and fairseq for all its stages); finished jobs are skipped. Returns each stage's stamps
    (``best``: the stage's best validation value of ``checkpoint.best_checkpoint_metric``)."""
    from fairseq_cli.hydra_train import _hydra_main

    results = {}
    for stage in stage_list:
        results[stage.name] = []
        for save, overrides in stage.jobs():
            stamp = done(save, stage.config, overrides)
            if stamp is None:
                log(f"[{stage.experiment}] {stage.name}: {stage.config} -> {save}")
                cfg = compose(cdir, stage.config, overrides)
                best = _hydra_main(cfg)
                stamp = write_stamp(save, stage.config, overrides, best=best,
                                    metric=cfg.checkpoint.best_checkpoint_metric,
                                    checkpoint_dir=cfg.checkpoint.save_dir)
            else:
                log(f"[{stage.experiment}] {stage.name}: done ({save}/{STAMP})")
            results[stage.name].append(stamp)
    return results


def run_commands(stage_list: Sequence[Stage], cdir: Path, launcher: Optional[str] = None, log=print) -> None:
    """Run each stage as its ``fairseq-hydra-train`` process (a sweep or a launcher: one ``-m`` command whose
    jobs hydra launches); a stage is stamped when its command exits 0, and skipped when stamped."""
    for stage in stage_list:
        cmd = command(stage, cdir, launcher)
        if done(stage.save, stage.config, cmd[1:]) is not None:
            log(f"[{stage.experiment}] {stage.name}: done ({stage.save}/{STAMP})")
            continue
        log(f"[{stage.experiment}] {stage.name}: {shell(cmd)}")
        # the module, not the console script, so that the running interpreter's environment is used (or PYTHON's,
        # the interpreter variable the recipes read)
        python = os.environ.get("PYTHON") or sys.executable
        proc = subprocess.run([python, "-m", "fairseq_cli.hydra_train", *cmd[1:]])
        if proc.returncode != 0:
            raise SystemExit(f"error: stage {stage.name} of {stage.experiment} failed (exit {proc.returncode})")
        write_stamp(stage.save, stage.config, cmd[1:])
