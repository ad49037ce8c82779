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
    assert "check_recipe_env" in text


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
