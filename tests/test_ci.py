"""CI cannot pass green with the suite unrun: .ci/run refuses a checkout without ../shared, and --max-skips
(tests/skip_budget.py) fails a run in which more tests skip than expected, also under pytest-xdist."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NEEDED = ("data/bible.en-es-ny.tsv.gz", "anchors/xlm-authors/xlm/model/transformer.py")


def test_ci_run_fails_without_shared_and_passes_the_skip_budget_to_make(tmp_path):
    """The real .ci/run in a stand-in checkout whose Makefile only prints what `make test` was given."""
    repo = tmp_path / "clone"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(REPO / ".ci" / "run", repo / ".ci" / "run")
    (repo / "Makefile").write_text("test:\n\t@echo make test $(PYTEST_ARGS)\n")
    # as CI starts it: not under make (a nested make prints "Entering directory" lines)
    env = {k: v for k, v in os.environ.items() if k not in ("MAX_SKIPS", "MAKELEVEL", "MAKEFLAGS", "MFLAGS")}

    def ci():
        return subprocess.run(["bash", str(repo / ".ci" / "run")], capture_output=True, text=True, env=env,
                              timeout=60)

    proc = ci()  # no ../shared at all
    assert proc.returncode == 1 and "make test" not in proc.stdout
    assert f"error: ../shared/{NEEDED[0]} is missing: CI needs ../shared beside the checkout" in proc.stderr
    for need in NEEDED:  # a copy with the corpus but without the authors' code fails too
        (tmp_path / "shared" / need).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "shared" / need).write_bytes(b"x")
        proc = ci()
        if need != NEEDED[-1]:
            assert proc.returncode == 1 and f"../shared/{NEEDED[1]} is missing" in proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("make test --max-skips ")


SKIPPING = '''
import pytest

@pytest.fixture
def corpus():
    pytest.skip("no corpus")

def test_fixture_skip(corpus):
    pass

def test_call_skip():
    pytest.skip("no authors' code")

@pytest.mark.skipif(True, reason="not on CPU")
def test_marked():
    pass

@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False

def test_passes():
    pass
'''


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_max_skips_fails_a_run_with_more_skips(tmp_path, workers):
    """3 skips (in a fixture, in the test, by a mark; an xfail is not one): --max-skips 2 fails, 3 passes
    (under xdist the controller counts the workers' reports: the failing run is enough to show it)."""
    if workers:
        pytest.importorskip("xdist")
    (tmp_path / "test_some.py").write_text(SKIPPING)
    env = dict(os.environ, PYTHONPATH=str(REPO / "tests"))

    def pytest_run(limit):
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "skip_budget", "-p", "no:cacheprovider",
                               "--max-skips", str(limit), *workers, "test_some.py"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    over = pytest_run(2)
    assert over.returncode == 1, over.stdout[-2000:]
    assert "error: 3 tests skipped, more than --max-skips 2" in over.stdout
    assert "1 x no corpus" in over.stdout and "1 x not on CPU" in over.stdout
    if workers:
        return
    within = pytest_run(3)
    assert within.returncode == 0, within.stdout[-2000:]
    assert "1 passed, 3 skipped, 1 xfailed" in within.stdout
