"""Shared fixtures: a small real data-bin (Bible en/es), the plugin folder, and a subprocess runner.

    bible_raw      Path of raw text made by fairseq_xlm.cli.bible (mono en, es; parallel en-es; genre labels)
    bible_databin  Path of that text binarized by fairseq_xlm.cli.prepare (layout of fairseq_xlm.data.layout)
    bible_ny_databin  a smaller monolingual en/es/ny data-bin (Chichewa too), for zero-shot transfer to ny
    pkg_dir        Path of the fairseq_xlm package folder, for --user-dir
    run_fairseq    run_fairseq(module, args, cwd=None, timeout=600, env=None) -> CompletedProcess
    one_torch_thread  torch on one thread for a module (``pytestmark = pytest.mark.usefixtures(...)``)
    dictionary     a fairseq Dictionary of 40 words w0..w39 and <mask>, for models built in the test process
    shared_dir     shared_dir(tmp_path_factory, name, build) -> Path: a folder built once per test run, also
                   under pytest-xdist (``make test`` runs ``-n 2``): the first worker builds, the others wait
    --max-skips N  fail the run when more than N tests skip (``.ci/run``; see docs/testing.md)
"""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Optional, Sequence

import pytest
from filelock import FileLock

import preload
from skip_budget import pytest_addoption, pytest_runtest_logreport, pytest_sessionfinish  # noqa: F401

REPO = Path(__file__).resolve().parents[1]

# The slice behind bible_databin: sizes other helpers' tests may rely on.
BIBLE_LANGS = ("en", "es")
BIBLE_MONO = {"train": 600, "valid": 80, "test": 80}
BIBLE_PARA = {"train": 300, "valid": 60, "test": 60}
BIBLE_VOCAB = 1000
# The slice behind bible_ny_databin: monolingual only (MLM pretraining), small so that it builds in seconds.
BIBLE_NY_LANGS = ("en", "es", "ny")
BIBLE_NY_MONO = {"train": 300, "valid": 40, "test": 40}


def bible_tsv() -> Path:
    """The real corpus: $XLM_BIBLE_TSV or shared/data/ beside the checkout (skip the test if absent)."""
    from fairseq_xlm.cli.bible import default_tsv

    path = Path(default_tsv())
    if not path.is_file():
        pytest.skip(f"Bible corpus not found at {path} (set XLM_BIBLE_TSV)")
    return path


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join((text or "").splitlines()[-lines:])


def commands_pythonpath() -> str:
    """PYTHONPATH of the tests' commands: this checkout first."""
    return os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))


@pytest.fixture(scope="session", autouse=True)
def preloaded_python():
    """The interpreter for the tests' commands (``PYTHON=`` of the recipes, ``run_module``): a client of a server
    that imported torch, fairseq and fairseq_xlm once and forks per command (tests/preload.py; about 7 s of CPU
    less per command). ``XLM_TEST_PRELOAD=0``: sys.executable. Tests that signal or time a command's process
    use sys.executable."""
    preload.start(commands_pythonpath())
    before = os.environ.get("PYTHON")
    if before is None:  # the recipes' interpreter (PYTHON=...), and what plan --run starts
        os.environ["PYTHON"] = preload.python()
    yield preload.python()
    if before is None:
        os.environ.pop("PYTHON", None)
    preload.stop()


def run_module(module: str, args: Sequence, cwd=None, timeout: float = 600,
               env: Optional[Mapping[str, str]] = None, preloaded: bool = True) -> subprocess.CompletedProcess:
    """``python -m module *args`` in a subprocess (through the preloaded interpreter unless ``preloaded`` is
    False); on failure or timeout, fail showing the output's tail."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = commands_pythonpath()
    # One thread per process: these runs are tiny, and on 2 cores extra threads only contend (3x slower).
    full_env.setdefault("OMP_NUM_THREADS", "1")
    full_env.update(env or {})
    cmd = [preload.python() if preloaded else sys.executable, "-m", module, *map(str, args)]
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        pytest.fail(f"timed out after {timeout}s: {' '.join(cmd)}\n--- stdout\n{_tail(out)}\n--- stderr\n{_tail(err)}")
    if proc.returncode != 0:
        pytest.fail(f"exit {proc.returncode}: {' '.join(cmd)}\n--- stdout\n{_tail(proc.stdout)}\n"
                    f"--- stderr\n{_tail(proc.stderr)}")
    return proc


def shared_dir(tmp_path_factory, name: str, build) -> Path:
    """``build(path)`` once per test run, its folder shared by every pytest-xdist worker (xdist's documented
    pattern: the workers' base temp dirs share a parent, a file lock lets the first one build); without
    xdist, a plain ``mktemp``. A ``name.done`` file beside the folder marks a finished build, so a failed or
    skipped build is redone (in place: sentencepiece records its paths in spm.model) instead of taken as done."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        out = tmp_path_factory.mktemp(name)
        build(out)
        return out
    root = tmp_path_factory.getbasetemp().parent
    out, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            if out.exists():
                shutil.rmtree(out)
            out.mkdir()
            build(out)
            done.touch()
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread while a module runs: on 2 shared cores, torch's default pool oversubscribes and tiny
    models run several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dictionary():
    """A small fairseq Dictionary (specials, w0..w39, <mask>) for models built in the test process."""
    from fairseq.data import Dictionary

    d = Dictionary()
    for i in range(40):
        d.add_symbol(f"w{i}")
    d.add_symbol("<mask>")
    return d


@pytest.fixture(scope="session")
def run_fairseq():
    """The ``run_module`` helper: ``run_fairseq("fairseq_cli.train", [...], cwd=tmp_path)``."""
    return run_module


@pytest.fixture(scope="session")
def pkg_dir() -> Path:
    """The fairseq_xlm package folder (what fairseq's --user-dir expects), found without importing it."""
    spec = importlib.util.find_spec("fairseq_xlm")
    return Path(list(spec.submodule_search_locations)[0])


@pytest.fixture(scope="session")
def bible_raw(tmp_path_factory) -> Path:
    """Raw text of a real Bible slice (split by chapter): {split}.{en,es} (+ .label genres) and
    {split}.en-es.{en,es}; sizes BIBLE_MONO / BIBLE_PARA verses."""
    from fairseq_xlm.cli import bible

    tsv = bible_tsv()

    def build(out: Path) -> None:
        argv = ["--tsv", str(tsv), "--out", str(out), "--langs", ",".join(BIBLE_LANGS),
                "--pairs", "-".join(BIBLE_LANGS), "--labels", "--ids"]
        for split in BIBLE_MONO:
            argv += [f"--{split}-verses", str(BIBLE_MONO[split]), f"--para-{split}-verses", str(BIBLE_PARA[split])]
        bible.main(argv)

    return shared_dir(tmp_path_factory, "bible_raw", build)


@pytest.fixture(scope="session")
def bible_databin(bible_raw, tmp_path_factory) -> Path:
    """A data-bin (dict.txt, spm.model, {split}.{en,es}.bin/idx, {split}.en-es.{en,es}.bin/idx,
    {split}.{en,es}.label) built from ``bible_raw`` with vocab ~1000; built once per session."""
    from fairseq_xlm.cli import prepare

    def build(out: Path) -> None:
        prepare.main(["--raw", str(bible_raw), "--destdir", str(out), "--langs", ",".join(BIBLE_LANGS),
                      "--vocab-size", str(BIBLE_VOCAB), "--sample-lines", "4000"])

    return shared_dir(tmp_path_factory, "bible_databin", build)


@pytest.fixture(scope="session")
def bible_ny_databin(tmp_path_factory) -> Path:
    """A data-bin of monolingual en, es, ny (Chichewa) Bible text, BIBLE_NY_MONO verses per language and
    split (with .label genres), vocab ~1000: its own raw slice in DATABIN/raw; built once per session."""
    from fairseq_xlm.cli import bible, prepare

    tsv = bible_tsv()

    def build(out: Path) -> None:
        argv = ["--tsv", str(tsv), "--out", str(out / "raw"), "--langs", ",".join(BIBLE_NY_LANGS), "--labels"]
        for split, n in BIBLE_NY_MONO.items():
            argv += [f"--{split}-verses", str(n)]
        bible.main(argv)
        prepare.main(["--raw", str(out / "raw"), "--destdir", str(out), "--langs", ",".join(BIBLE_NY_LANGS),
                      "--vocab-size", str(BIBLE_VOCAB), "--sample-lines", "4000"])

    return shared_dir(tmp_path_factory, "bible_ny_databin", build)
