"""The recipes as a newcomer meets them: they parse, find their Python from anywhere, share one name for update
counts, and report variables set for another recipe (recipes/lib/env.sh)."""

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.sh"))
ENV_LIB = REPO / "recipes" / "lib" / "env.sh"


def bash(script: str, env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "FAIRSEQ_XLM_ENV_CHECKED"}
    return subprocess.run(["bash", "-c", f"set -euo pipefail; source {ENV_LIB}; {script}"],
                          env={**clean, **env}, capture_output=True, text=True, timeout=60, cwd=REPO)


def recipe_vars(path: Path):
    proc = bash(f"_recipe_vars {path}", {})
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_parses_and_defaults_python_to_the_repository_venv(recipe):
    assert subprocess.run(["bash", "-n", str(recipe)], capture_output=True).returncode == 0
    text = recipe.read_text()
    defaults = re.findall(r"^\s*PYTHON=\$\{PYTHON:-([^}]*)\}", text, re.M)
    assert defaults in ([], ["$ROOT/.venv/bin/python"])  # absolute: works outside the repository root
    # a recipe checks its variables; a thin wrapper around a Python runner leaves that to the runner
    # (replicate.sh -> fairseq_xlm.cli.replicate, whose settings module warns about unread variables)
    assert "check_recipe_env" in text or re.search(r'^exec "\$PYTHON" -m fairseq_xlm\.cli\.\w+', text, re.M)


def test_one_name_for_update_counts():
    for recipe in RECIPES:
        for name in recipe_vars(recipe):
            if "UPDATE" in name and not re.search(r"renamed_var\s+" + name, recipe.read_text()):
                assert re.fullmatch(r"([A-Z]+_)?MAX_UPDATE", name), f"{recipe.name}: {name}"
    assert {"MAX_UPDATE", "PRE_MAX_UPDATE"} <= recipe_vars(REPO / "recipes" / "umt.sh")
    assert "MAX_UPDATE" in recipe_vars(REPO / "recipes" / "pretrain.sh") & recipe_vars(REPO / "recipes" / "xnli.sh")


def test_variables_of_another_recipe_are_reported():
    env = {"PRE_STEPS": "en", "BATCH": "8", "SOMETHING_ELSE": "1", "OMP_NUM_THREADS": "1"}
    proc = bash("check_recipe_env recipes/xnli.sh; check_recipe_env recipes/xnli.sh", env)
    assert proc.returncode == 0, proc.stderr
    # PRE_STEPS is umt.sh's; BATCH is xnli.sh's own; SOMETHING_ELSE no recipe's; checked once per process tree
    assert proc.stderr.splitlines() == ["warning: PRE_STEPS is set but xnli.sh does not read it (read by umt.sh)"]
    # a recipe that hands its settings to another one may be given that one's variables
    proc = bash("check_recipe_env recipes/supervised_mt.sh recipes/umt.sh", env)
    assert proc.returncode == 0 and "PRE_STEPS" not in proc.stderr and "BATCH is set but" in proc.stderr


def test_renamed_variables_keep_working_with_a_warning():
    proc = bash('renamed_var MAX_UPDATES MAX_UPDATE; echo "${MAX_UPDATE:-unset}"', {"MAX_UPDATES": "5"})
    assert proc.stdout.strip() == "5" and "MAX_UPDATES is renamed MAX_UPDATE" in proc.stderr
    proc = bash('renamed_var MAX_UPDATES MAX_UPDATE; echo "$MAX_UPDATE"', {"MAX_UPDATES": "5", "MAX_UPDATE": "7"})
    assert proc.stdout.strip() == "7" and "both are set, MAX_UPDATE=7 is used" in proc.stderr
    proc = bash('renamed_var MAX_UPDATES MAX_UPDATE; echo "${MAX_UPDATE:-unset}"', {})
    assert proc.stdout.strip() == "unset" and proc.stderr == ""
    # umt.sh (no stage selected: nothing runs) reads the old names and says so
    clean = {k: v for k, v in os.environ.items() if k != "FAIRSEQ_XLM_ENV_CHECKED"}
    umt = subprocess.run(["bash", str(REPO / "recipes" / "umt.sh"), "--stage", "9"],
                         env={**clean, "PRE_UPDATES": "3", "BATCH_SIZE": "8"}, capture_output=True, text=True,
                         timeout=60, cwd="/")
    assert umt.returncode == 0, umt.stderr
    assert "PRE_UPDATES is renamed PRE_MAX_UPDATE (one name across recipes); using PRE_MAX_UPDATE=3" in umt.stderr
    assert "BATCH_SIZE is set but umt.sh does not read it (read by pretrain.sh)" in umt.stderr


def fake_python(tmp_path: Path, cuda: bool = False) -> Path:
    """A PYTHON for the recipes that records fairseq-train's arguments (one per line, ==END== after each run)
    instead of training, answers the recipes' GPU and user-dir questions, and runs anything else for real."""
    import sys

    script = tmp_path / "python"
    script.write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$1" = -m ] && [ "$2" = fairseq_cli.train ]; then printf "%s\\n" "${@:3}" "==END==" >> "$ARGS_OUT"; '
        'echo "==TRAIN== OMP_NUM_THREADS=${OMP_NUM_THREADS-unset} OMP_WAIT_POLICY=${OMP_WAIT_POLICY-unset}" >&2; '
        'exit 0; fi\n'
        f'if [ "$1" = -c ] && [[ "$2" == *cuda.is_available* ]]; then exit {0 if cuda else 1}; fi\n'
        f'if [ "$1" = -c ] && [[ "$2" == *userdir* ]]; then echo {REPO / "fairseq_xlm"}; exit 0; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    script.chmod(0o755)
    return script


def run_recipe(tmp_path: Path, args, env: dict, cuda: bool = False):
    """(process, fairseq-train's argument lists) of one recipe run with fake_python."""
    clean = {k: v for k, v in os.environ.items() if k not in ("FAIRSEQ_XLM_ENV_CHECKED", "BF16")}
    out = tmp_path / "train-args.txt"
    out.unlink(missing_ok=True)
    proc = subprocess.run(["bash", *map(str, args)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**clean, "PYTHON": str(fake_python(tmp_path, cuda)), "ARGS_OUT": str(out), **env})
    runs = out.read_text().split("==END==\n")[:-1] if out.exists() else []
    return proc, [run.split("\n")[:-1] for run in runs]


@pytest.fixture
def cpuinfo(tmp_path):
    def write(flags: str) -> str:
        path = tmp_path / f"cpuinfo-{len(flags)}"
        path.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
        return str(path)
    return write


def test_bf16_reaches_fairseq_train_in_every_training_recipe(tmp_path, cpuinfo):
    """BF16=1 adds --autocast-bf16 to each fairseq-train of pretrain.sh, xnli.sh (stage 3), umt.sh (stage 2)
    and supervised_mt.sh (umt.sh's stage 3); BF16=0 (the default) adds nothing."""
    data = tmp_path / "bin"
    data.mkdir()
    (data / "dict.txt").write_text("a 1\n")
    (data / "train.en.bin").write_text("")
    ckpt = tmp_path / "pre.pt"
    ckpt.write_text("")
    native = {"FAIRSEQ_XLM_CPUINFO": cpuinfo("avx512f avx512_bf16")}
    recipes = {
        "pretrain": [REPO / "recipes" / "pretrain.sh", "mlm", data, tmp_path / "save", "--cpu"],
        "xnli": [REPO / "recipes" / "xnli.sh", "--stage", "3", "--stop-stage", "3", data, ckpt],
        "umt pretraining": [REPO / "recipes" / "umt.sh", "--stage", "2", "--stop-stage", "2"],
        "supervised_mt": [REPO / "recipes" / "supervised_mt.sh", "--stage", "3", "--stop-stage", "3"],
    }
    env = {"DATABIN": str(data), "PRE_SAVE": str(tmp_path / "pre"),
           "SAVE": str(tmp_path / "mt"), "SCALE": "small"}
    for name, args in recipes.items():
        extra = {"PRETRAINED": str(ckpt)} if name == "supervised_mt" else {}
        for bf16 in ("1", "0"):
            work = {"WORK": str(tmp_path / f"xnli-{bf16}")}  # a finished fine-tuning is not run again
            proc, runs = run_recipe(tmp_path, args, {**env, **native, **extra, **work, "BF16": bf16})
            assert proc.returncode == 0, (name, proc.stderr)
            assert len(runs) == 1, (name, runs)
            assert runs[0].count("--autocast-bf16") == (bf16 == "1"), (name, runs[0])
            assert "avx512_bf16" not in proc.stderr, (name, proc.stderr)  # native bf16: no warning


def test_bf16_warns_once_on_a_cpu_without_native_bf16_and_rejects_other_values(tmp_path, cpuinfo):
    data = tmp_path / "bin"
    data.mkdir()
    (data / "dict.txt").write_text("a 1\n")
    (data / "train.en.bin").write_text("")
    args = [REPO / "recipes" / "pretrain.sh", "mlm", data, tmp_path / "save"]
    emulated = {"BF16": "1", "FAIRSEQ_XLM_CPUINFO": cpuinfo("avx512f"), "SCALE": "small"}
    for extra, cuda in ((["--cpu"], True), ([], False)):  # --cpu, or no GPU visible: the run is on the CPU
        proc, runs = run_recipe(tmp_path, args + extra, emulated, cuda=cuda)
        assert proc.returncode == 0 and "--autocast-bf16" in runs[0], proc.stderr
        warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
        assert len(warnings) == 1 and "avx512_bf16/amx_bf16" in warnings[0], proc.stderr
    proc, runs = run_recipe(tmp_path, args, emulated, cuda=True)  # on a GPU the CPU's flags do not matter
    assert proc.returncode == 0 and "--autocast-bf16" in runs[0] and "avx512_bf16" not in proc.stderr
    proc, runs = run_recipe(tmp_path, args, {"BF16": "yes", "SCALE": "small"})
    assert proc.returncode == 2 and runs == [] and "BF16=yes: expected 0 (fp32) or 1" in proc.stderr


def _train_env(proc) -> str:
    """The OMP_* line fake_python printed when the recipe started fairseq-train (xnli.sh tees it to stdout)."""
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("==TRAIN==")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_cpu_runs_get_one_threading_default_and_gpu_runs_are_left_alone(tmp_path):
    """Issue 28: every training recipe on a CPU gets OMP_WAIT_POLICY=PASSIVE and OMP_NUM_THREADS (min(cores, 4),
    or THREADS); a value the user set wins; a GPU run's environment is not touched."""
    data = tmp_path / "bin"
    data.mkdir()
    (data / "dict.txt").write_text("a 1\n")
    (data / "train.en.bin").write_text("")
    ckpt = tmp_path / "pre.pt"
    ckpt.write_text("")
    cores = min(os.cpu_count() or 1, 4)
    clean = {"OMP_NUM_THREADS": "", "OMP_WAIT_POLICY": "", "SCALE": "small", "DATABIN": str(data),
             "PRETRAINED": str(ckpt), "SAVE": str(tmp_path / "mt"), "WORK": str(tmp_path / "xnli")}
    recipes = {
        "pretrain": [REPO / "recipes" / "pretrain.sh", "mlm", data, tmp_path / "save", "--cpu"],
        "supervised_mt": [REPO / "recipes" / "supervised_mt.sh", "--stage", "3", "--stop-stage", "3"],
        "xnli": [REPO / "recipes" / "xnli.sh", "--stage", "3", "--stop-stage", "3", data, ckpt],
    }
    for name, args in recipes.items():
        extra = {"EXTRA": "--cpu"} if name == "supervised_mt" else {}
        if name == "xnli":
            extra = {"DEVICE_FLAGS": "--cpu"}
        proc, _ = run_recipe(tmp_path, args, {**clean, **extra})
        assert proc.returncode == 0, (name, proc.stderr)
        assert _train_env(proc).endswith(f"OMP_NUM_THREADS={cores} OMP_WAIT_POLICY=PASSIVE"), name
    pretrain = recipes["pretrain"]
    proc, _ = run_recipe(tmp_path, pretrain, {**clean, "THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE"})
    assert _train_env(proc).endswith("OMP_NUM_THREADS=1 OMP_WAIT_POLICY=ACTIVE")
    proc, _ = run_recipe(tmp_path, pretrain[:-1], {**clean, "FAIRSEQ_XLM_FAKE_GPU": "1"}, cuda=True)
    assert _train_env(proc).endswith("OMP_NUM_THREADS= OMP_WAIT_POLICY=")  # as given (empty): untouched


def test_paper_scale_on_a_cpu_says_size_and_time_before_training(tmp_path):
    """Issue 28: a forgotten SCALE=small built the paper's model for 500k updates behind a banner. Now a loud
    warning with its size and a time estimate comes before fairseq-train starts; SCALE=small and GPUs get none."""
    data = tmp_path / "bin"
    data.mkdir()
    (data / "dict.txt").write_text("".join(f"w{i} 1\n" for i in range(1000)))
    (data / "train.en.bin").write_text("")
    args = [REPO / "recipes" / "pretrain.sh", "mlm", data, tmp_path / "save", "--cpu"]
    proc, runs = run_recipe(tmp_path, args, {"SCALE": "paper"})
    assert proc.returncode == 0 and len(runs) == 1, proc.stderr
    lines = proc.stderr.splitlines()
    train = next(i for i, line in enumerate(lines) if line.startswith("==TRAIN=="))
    warning = next(i for i, line in enumerate(lines) if line.startswith("warning: SCALE=paper on a CPU"))
    assert warning < train
    assert re.search(r"xlm_mlm_enfr_1024: \d+\.\dM parameters, 500000 updates of 32 x 256 tokens: at least "
                     r"[\d.]+ (days|hours) on this CPU", lines[warning]), lines[warning]
    for env in ({"SCALE": "small"}, {"SCALE": "paper", "FAIRSEQ_XLM_FAKE_GPU": "1"}):
        proc, _ = run_recipe(tmp_path, args[:-1], env, cuda=True)
        assert proc.returncode == 0 and "SCALE=paper on a CPU" not in proc.stderr, proc.stderr


def test_the_estimate_counts_the_models_parameters(bible_databin):
    """The size the warning gives is the built model's; the time is FLOPs per update over the given speed."""
    import fairseq_xlm  # noqa: F401
    from fairseq_xlm.cli import estimate
    from fairseq_xlm.data import layout
    from fairseq_xlm.models.factory import build_model

    d = layout.load_dictionary(str(bible_databin))
    model = build_model("xlm_tiny", d, ["en", "es"])
    assert estimate.parameters("xlm_tiny", len(d), 2) == sum(p.numel() for p in model.parameters())
    # 2 layers of 64 (FFN 256): 6 * tokens * (2 * (4 * 64^2 + 2 * 64 * 256) + 0.15 * vocab * 64)
    assert estimate.update_flops("xlm_tiny", len(d), 100) == pytest.approx(
        6 * 100 * (2 * (4 * 64 ** 2 + 2 * 64 * 256) + 0.15 * len(d) * 64))
    line = estimate.main(["--arch", "xlm_tiny", "--data", str(bible_databin), "--langs", "2", "--batch-size", "10",
                          "--tokens-per-sample", "10", "--max-update", "1000", "--flops", "1e9"])
    per_update = estimate.update_flops("xlm_tiny", len(d), 100) / 1e9
    assert f"at least {estimate.duration(per_update * 1000)} on this CPU (>= {per_update:.2f} s per update" in line
