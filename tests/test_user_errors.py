"""Our errors as one line under fairseq's own commands (issue 28, item 4), the traceback behind FAIRSEQ_XLM_DEBUG.

One Python process runs fairseq-train, fairseq-generate and fairseq-validate (their ``cli_main``, as the console
scripts do) on the usual mistakes: a wrong data path, a language not in the data-bin, a misspelt step, a
pretraining checkpoint given to MT. Each error goes to ``sys.excepthook`` as the interpreter would pass it; the
last one is left uncaught, so the interpreter's own path is tested too. One start-up for all cases.
"""

import io
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import commands_pythonpath

from fairseq_xlm import errors

# Each case: (name, module, argv after the data path, a phrase the one line must hold).
CASES = [
    ("wrong data path", "fairseq_cli.train", ["NOPE", "--langs", "en,es", "--mlm-steps", "en,es"],
     r"NOPE/dict.txt: no dictionary"),
    ("language not in the data-bin", "fairseq_cli.train", ["DATA", "--langs", "en,fr", "--mlm-steps", "en,fr"],
     r"no monolingual data for 'fr' .*\(it has monolingual: en, es"),
    ("misspelt step", "fairseq_cli.train", ["DATA", "--langs", "en,es", "--mlm-steps", "en,es,en-fe"],
     r"--mlm-steps: language\(s\) \['fe'\] of step 'en-fe' are not in --langs en,es"),
    ("MT direction not in the data-bin", "fairseq_cli.generate",
     ["DATA", "--task", "unsupervised_mt", "--path", "PRE", "--source-lang", "en", "--target-lang", "fr"],
     r"--target-lang fr is not one of the languages en,es"),
    ("pretraining checkpoint given to MT", "fairseq_cli.generate",
     ["DATA", "--task", "unsupervised_mt", "--path", "PRE", "--source-lang", "en", "--target-lang", "es"],
     r"pretraining checkpoint; MT needs an xlm_mt one"),
]
TRAIN = ["--task", "xlm_pretrain", "--arch", "xlm_tiny", "--criterion", "xlm_lm", "--max-update", "1",
         "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "8", "--tokens-per-sample", "64",
         "--disable-validation", "--no-save"]

DRIVER = textwrap.dedent("""
    import io, json, runpy, sys, warnings
    # running an imported module again as __main__ is this driver's doing, not the commands': not their noise
    warnings.filterwarnings("ignore", message=".*found in sys.modules after import of package", category=RuntimeWarning)
    cases = json.loads(sys.argv[1])
    import fairseq  # first, as fairseq's commands import it (its import sets the root logger to DEBUG)
    import fairseq_xlm.cli.demo as demo
    demo.random_init(sys.argv[2], json.loads(sys.argv[3]))
    # item 5: learning curves print nothing but errors (matplotlib's DEBUG lines came through fairseq's root logger)
    print("=== curves", file=sys.stderr, flush=True)
    sys.argv = ["curves"] + json.loads(sys.argv[4])
    runpy.run_module("fairseq_xlm.cli.curves", run_name="__main__")
    print("=== end", file=sys.stderr, flush=True)
    for i, (name, module, argv) in enumerate(cases):
        sys.argv = [module] + argv
        print(f"=== {name}", file=sys.stderr, flush=True)
        if i == len(cases) - 1:  # the interpreter's own excepthook for the last one
            runpy.run_module(module, run_name="__main__")
        try:
            runpy.run_module(module, run_name="__main__")
        except BaseException:
            sys.excepthook(*sys.exc_info())
        print("=== end", file=sys.stderr, flush=True)
""")


@pytest.fixture(scope="module")
def cli_errors(bible_databin, pkg_dir, tmp_path_factory):
    """{case name: what the command wrote to stderr} and the driver's exit status."""
    import json
    import os

    tmp = tmp_path_factory.mktemp("user_errors")
    pre = tmp / "pre.pt"
    common = ["--user-dir", str(pkg_dir), "--cpu", "--num-workers", "0"]
    subst = {"DATA": str(bible_databin), "NOPE": str(tmp / "NOPE"), "PRE": str(pre)}
    cases = []
    for name, module, argv, _ in CASES:
        argv = [subst.get(a, a) for a in argv]
        extra = TRAIN if module == "fairseq_cli.train" else []
        cases.append((name, module, argv + common + extra))
    init = [str(bible_databin), *common, *TRAIN, "--langs", "en,es", "--mlm-steps", "en,es"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=commands_pythonpath())
    env.pop("FAIRSEQ_XLM_DEBUG", None)
    env.pop("FAIRSEQ_XLM_TRACEBACK", None)
    log = tmp / "train.log"
    log.write_text("".join(f"2026-01-01 | INFO | valid | epoch 001 | valid on 'valid' subset | loss {9 - i} | "
                           f"num_updates {10 * i}\n" for i in range(1, 4)))
    curves = [f"run={log}", "--metrics", "loss", "--out", str(tmp / "curves.png")]
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(cases), str(pre), json.dumps(init),
                           json.dumps(curves)],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    out = {}
    for block in proc.stderr.split("=== ")[1:]:
        name, _, text = block.partition("\n")
        if name != "end":
            out[name] = text
    return out, proc


@pytest.mark.parametrize("name, phrase", [(c[0], c[3]) for c in CASES])
def test_fairseq_commands_end_in_one_error_line(cli_errors, name, phrase):
    import re

    out, proc = cli_errors
    assert name in out, proc.stderr[-3000:]
    text = out[name]
    lines = [line for line in text.splitlines() if line.strip()]
    assert "Traceback" not in text, text[-3000:]
    assert lines and lines[-1].startswith("error: "), text[-3000:]
    assert re.search(phrase, lines[-1]), lines[-1]
    if name == CASES[-1][0]:  # left uncaught: the interpreter's hook, exit status 1
        assert proc.returncode == 1


def test_no_library_noise(cli_errors):
    """Issue 28, item 5: no hydra deprecation warnings (``self.delegate = real_initialize(``) under fairseq's
    commands, no pin_memory warning on the CPU, no matplotlib DEBUG lines from the learning curves."""
    out, proc = cli_errors
    assert "curves" in out and out["curves"].strip() == "", out.get("curves", proc.stderr)[-3000:]
    for noise in ("UserWarning", "real_initialize", "pin_memory", "DEBUG"):
        assert noise not in proc.stderr, proc.stderr[proc.stderr.find(noise) - 500:][:1500]


def test_debug_switch_shows_the_traceback(monkeypatch):
    seen = []
    hook = errors._hook(lambda *exc: seen.append(exc))
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    err = errors.ConfigError("--langs en,fr: no fr")
    monkeypatch.setenv("FAIRSEQ_XLM_DEBUG", "1")
    hook(errors.ConfigError, err, None)
    assert seen and sys.stderr.getvalue() == ""
    monkeypatch.delenv("FAIRSEQ_XLM_DEBUG")
    hook(errors.ConfigError, err, None)
    assert sys.stderr.getvalue() == "error: --langs en,fr: no fr\n" and len(seen) == 1


def test_an_error_of_a_spawned_rank_is_one_line(monkeypatch):
    """Several GPUs: torch.multiprocessing.spawn re-raises a rank's error with its traceback as text."""
    from torch.multiprocessing.spawn import ProcessRaisedException

    seen = []
    hook = errors._hook(lambda *exc: seen.append(exc))
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    text = ("\n\n-- Process 1 terminated with the following error:\nTraceback (most recent call last):\n"
            '  File "x.py", line 1, in f\nfairseq_xlm.errors.ConfigError: --mlm-steps: bad step\n')
    hook(ProcessRaisedException, ProcessRaisedException(text, 1, 123), None)
    assert sys.stderr.getvalue() == "error: --mlm-steps: bad step\n" and not seen
    other = ProcessRaisedException(text.replace("fairseq_xlm.errors.ConfigError", "KeyError"), 1, 123)
    hook(ProcessRaisedException, other, None)
    assert len(seen) == 1  # not ours: the traceback stays


def test_user_errors_keep_their_builtin_classes():
    """``except ValueError`` / ``except FileNotFoundError`` around our code keep catching them."""
    assert issubclass(errors.ConfigError, ValueError) and issubclass(errors.DataBinError, ValueError)
    assert issubclass(errors.MissingFileError, FileNotFoundError)
    assert issubclass(errors.DiskFullError, OSError)
    assert str(errors.MissingFileError("x: no such file")) == "x: no such file"


def test_text_only_commands_skip_torch_and_fairseq_and_keep_one_line_errors(tmp_path):
    """Under FAIRSEQ_XLM_REGISTER=0 (what the recipes give the BLEU scorer, cli.bible and the demo's genre text and
    report) these commands import neither torch nor fairseq (about 6 s of CPU each on a slow machine), and a bad
    flag is still one error line."""
    env = dict(os.environ, FAIRSEQ_XLM_REGISTER="0", PYTHONPATH=commands_pythonpath())
    probe = ("import sys, fairseq_xlm.cli.bible, fairseq_xlm.cli.bleu, fairseq_xlm.cli.demo, fairseq_xlm.cli.mt_inputs;"
             "print(sorted(m for m in ('torch', 'fairseq') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
    (tmp_path / "raw").mkdir()
    proc = subprocess.run([sys.executable, "-m", "fairseq_xlm.cli.demo", "genre-raw", "--sample", str(tmp_path / "raw"),
                           "--out", str(tmp_path / "out"), "--train-lang", "en", "--pair", "en-en"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr.strip() == "error: --pair 'en,en' names a language twice"
    assert not (tmp_path / "out").exists()
