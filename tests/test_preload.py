"""tests/preload.py, the preloaded interpreter of the tests' commands: a command through it behaves as one run by
a real interpreter (output streams, exit status, arguments, folder, environment, stdin), falls back to a real
interpreter where a fresh process would differ, and dies with its client."""

import os
import signal
import subprocess
import sys
import time

import preload
import pytest

MODULE = '''import os, sys
print("argv", sys.argv[1:], "cwd", os.getcwd(), "var", os.environ.get("XLM_PRELOAD_PROBE"))
print("stdin", sys.stdin.read().strip())
print("to stderr", file=sys.stderr)
if os.environ.get("XLM_PRELOAD_WHERE"):  # differs by design: what the server preloaded
    import logging
    print("root handlers", len(logging.getLogger().handlers), "torch" in sys.modules)
sys.exit(int(os.environ.get("XLM_PRELOAD_EXIT", "0")))
'''


@pytest.fixture
def probe(tmp_path):
    (tmp_path / "xlm_preload_probe.py").write_text(MODULE)
    return tmp_path


def run(python, probe, **env):
    # the server's environment: other tests of this process may have left variables in os.environ (fairseq's
    # iterators set PYTHONWARNINGS, for one) that send a command to a real interpreter
    full = dict(preload.server_env() or os.environ, OMP_NUM_THREADS="1", XLM_PRELOAD_WHERE="1")
    full.update(env)  # python -m finds the module in the working folder
    for name in [k for k, v in full.items() if v is None]:
        del full[name]
    return subprocess.run([python, "-m", "xlm_preload_probe", "a b", "--c"], cwd=probe, env=full, input="hello\n",
                          capture_output=True, text=True, timeout=120)


def test_a_command_behaves_as_under_a_real_interpreter(probe, preloaded_python):
    if preloaded_python == sys.executable:
        pytest.skip("XLM_TEST_PRELOAD=0")
    for code in ("0", "3"):
        real = run(sys.executable, probe, XLM_PRELOAD_PROBE="x", XLM_PRELOAD_EXIT=code, XLM_PRELOAD_WHERE=None)
        ours = run(preloaded_python, probe, XLM_PRELOAD_PROBE="x", XLM_PRELOAD_EXIT=code, XLM_PRELOAD_WHERE=None)
        assert (ours.returncode, ours.stdout, ours.stderr) == (real.returncode, real.stdout, real.stderr)
        assert real.returncode == int(code) and "argv ['a b', '--c']" in real.stdout and "stdin hello" in real.stdout
    # python's own words for a missing module
    real = subprocess.run([sys.executable, "-m", "xlm_no_such_module"], capture_output=True, text=True)
    ours = subprocess.run([preloaded_python, "-m", "xlm_no_such_module"], capture_output=True, text=True)
    assert (ours.returncode, ours.stderr) == (real.returncode, real.stderr) == (1, real.stderr)


def test_it_forks_from_the_preloaded_server_and_falls_back_where_a_fresh_process_differs(probe, preloaded_python):
    if preloaded_python == sys.executable:
        pytest.skip("XLM_TEST_PRELOAD=0")
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(os.path.dirname(preloaded_python), "sock")):
        if preload._state["proc"].poll() is not None:  # it refused to serve (no pidfd, threads): said in its log
            log = os.path.join(os.path.dirname(preloaded_python), "server.log")
            pytest.skip(f"the preload server does not serve here: {open(log).read()[-300:]}")
        assert time.monotonic() < deadline, "the preload server did not start"
        time.sleep(0.5)
    # torch is already imported in the forked child (the server preloaded it), not in a real interpreter's
    assert "root handlers 0 True" in run(preloaded_python, probe).stdout
    assert "root handlers 0 False" in run(sys.executable, probe).stdout
    # warnings options: applied as at start-up (behind the filters the libraries add on import)
    # (after importing what a command imports, whose filters a fresh interpreter adds too)
    filters = ("import warnings, sys, fairseq; print('filters', [f[:1] + f[2:] for f in warnings.filters], "
               "sys.warnoptions)")
    (probe / "xlm_preload_filters.py").write_text(filters + "\n")
    for options in ("", "ignore:semaphore_tracker:UserWarning,always::ResourceWarning"):
        outs = [subprocess.run([python, "-m", "xlm_preload_filters"], cwd=probe, capture_output=True, text=True, timeout=120,
                               env=dict(preload.server_env() or os.environ, OMP_NUM_THREADS="1",
                                        PYTHONWARNINGS=options))
                for python in (sys.executable, preloaded_python)]
        assert outs[0].stdout == outs[1].stdout and outs[0].stdout.startswith("filters"), [o.stderr[-500:] for o in outs]
    # a variable the preloaded libraries read at import time, another PYTHONPATH: a real interpreter runs it
    assert "root handlers 0 False" in run(preloaded_python, probe, PYTHONPATH=str(probe)).stdout
    assert "root handlers 0 False" in run(preloaded_python, probe, MKL_NUM_THREADS="3").stdout
    # OpenMP's wait policy is read when torch loads: the server has the recipes' (PASSIVE); with one thread it
    # does not matter
    assert "root handlers 0 False" in run(preloaded_python, probe, OMP_NUM_THREADS="2", OMP_WAIT_POLICY=None).stdout
    assert "root handlers 0 True" in run(preloaded_python, probe, OMP_NUM_THREADS="2",
                                         OMP_WAIT_POLICY="PASSIVE").stdout
    assert "root handlers 0 True" in run(preloaded_python, probe, OMP_NUM_THREADS="1",
                                         OMP_WAIT_POLICY="ACTIVE").stdout


def test_the_command_dies_with_its_client(tmp_path, preloaded_python):
    if preloaded_python == sys.executable:
        pytest.skip("XLM_TEST_PRELOAD=0")
    (tmp_path / "xlm_preload_sleeper.py").write_text(
        "import os, sys, time\nopen(sys.argv[1], 'w').write(str(os.getpid()))\ntime.sleep(300)\n")
    pid_file = tmp_path / "pid"
    client = subprocess.Popen([preloaded_python, "-m", "xlm_preload_sleeper", str(pid_file)], cwd=tmp_path,
                              env=dict(preload.server_env() or os.environ, OMP_NUM_THREADS="1"))
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.monotonic() < deadline and client.poll() is None
        time.sleep(0.1)
    pid = int(pid_file.read_text())
    client.send_signal(signal.SIGKILL)  # what subprocess.run's timeout does
    client.wait()
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z":
        assert time.monotonic() < deadline, "the command outlived its client"
        time.sleep(0.1)
