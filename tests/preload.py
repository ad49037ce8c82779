"""A preloaded Python for the tests' commands: a server that has imported the third-party libraries of
fairseq's commands once (torch, numpy, scipy, scikit-learn, hydra, ...: ~90 % of a command's import time) forks
a child per ``python -m MODULE ...`` command, so that a command starts in about a second of CPU instead of
seven (most of the suite's time: its commands are tiny runs).

The idea is the one of Ruby's Spork/Zeus and Android's zygote: preload, then fork. A client (the executable
``write_client`` writes per test session, which takes python's command line) sends its argv, environment and
working directory, and its own stdin/stdout/stderr descriptors (SCM_RIGHTS), to the server over a Unix socket.
A waiter forked by the server forks the command's process, which takes those descriptors as 0/1/2, the
environment, the folder and ``sys.argv``, then runs the module as ``__main__`` (``runpy``, as ``python -m``
does) and exits with its status. The waiter sends the status back to the client, or kills the command when the
client goes away (a test's timeout), so a command behaves as a child of the client: same output streams, same
exit status.

fairseq, fairseq_cli and fairseq_xlm are NOT preloaded: their imports configure logging (fairseq's tasks call
``logging.basicConfig``; ``fairseq_cli.train`` configures it before importing fairseq, ``generate`` after), so
each command imports them itself, in its own order, as a fresh process does. What a fresh interpreter would do
differently is sent to a real interpreter instead (the client execs ``sys.executable``): any command line other
than ``[-u] [-B] -m MODULE ...``, and any environment that differs from the server's in a variable read at
import time by the preloaded libraries (``PYTHON*``, ``LD_*``, OpenMP/MKL settings other than
``OMP_NUM_THREADS``, ``TORCH*``, ...). Per command, the child sets torch's threads from ``OMP_NUM_THREADS`` and
reseeds numpy's and torch's global generators from the OS (a fresh process would; Python's ``random`` reseeds
itself after a fork). It shares the server's string-hash seed: a test that relies on two runs differing in set
order needs real processes, and so do tests that signal or kill the command's process group (they use
``sys.executable``). ``XLM_TEST_PRELOAD=0`` turns the whole thing off; ``XLM_TEST_PRELOAD_DEBUG=1`` has the
server log each fallback and why.
"""

import array
import json
import os
import socket
import struct
import sys

# read at import time by the interpreter or the preloaded libraries (fairseq's and fairseq_xlm's own variables,
# FAIRSEQ_XLM_*, LOGLEVEL, are read by modules each command imports itself)
SENSITIVE_PREFIXES = ("PYTHON", "LD_", "OMP_", "KMP_", "GOMP_", "MKL_", "OPENBLAS_", "TORCH", "PYTORCH", "MALLOC_",
                      "NUMPY_", "SCIPY_", "SKLEARN_")  # CUDA_*: read when CUDA starts, in the command
# read per command, or by nothing at import time
PER_COMMAND = {"OMP_NUM_THREADS", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE",
               "PYTHON"}  # the recipes' interpreter variable, not the interpreter's
# The server imports what these commands import, except fairseq, fairseq_cli and fairseq_xlm themselves: their
# imports configure logging (fairseq's tasks call logging.basicConfig; fairseq_cli.train configures it before
# importing fairseq, generate after), so they must run in each command as in a fresh process. The third-party
# libraries below them (torch, numpy, scipy, scikit-learn, hydra, ...) are ~90 % of the import time.
COMMANDS_IMPORT = ("fairseq_cli.train", "fairseq_cli.generate", "fairseq_cli.validate", "fairseq.hub_utils",
                   "fairseq_xlm", "sentencepiece", "sacrebleu")
OWN = ("fairseq", "fairseq_cli", "fairseq_xlm", "__main__")


def _third_party_modules():
    """The non-stdlib modules, other than OWN, that a fresh interpreter imports for COMMANDS_IMPORT, in order."""
    import subprocess

    code = ("import json, sys; before = set(sys.modules)\n"
            f"for m in {COMMANDS_IMPORT!r}: __import__(m)\n"
            "print(json.dumps([m for m in sys.modules if m not in before]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    names = json.loads(out.strip().splitlines()[-1])
    return [m for m in names if m.split(".")[0] not in sys.stdlib_module_names
            and not m.split(".")[0].startswith(OWN) and not m.startswith("_")]


def _env_differs(env, server_env, added=None):
    """The variables read at import time whose values in ``env`` are not the server's (before its imports);
    ``added``: those the imports set (torch sets KMP_*), which ``env`` may hold with the same value or not at all
    (a command started by a process that imported torch inherits them; a fresh one sets them the same way)."""
    added = added or {}
    def sensitive(name):
        if name in PER_COMMAND:
            return False
        if name == "OMP_WAIT_POLICY" and env.get("OMP_NUM_THREADS", "") == "1":
            return False  # with one thread, nothing waits
        if name.startswith("TORCHINDUCTOR_"):
            return False  # read when compiling, which these commands do not
        if name == "MKL_NUM_THREADS" and env.get(name) == env.get("OMP_NUM_THREADS"):
            return False  # torch.set_num_threads, which the command calls, sets MKL's threads too
        if name == "PYTHONWARNINGS":
            return False  # applied by the command as at start-up (_apply_warnoptions)
        return name.startswith(SENSITIVE_PREFIXES)

    def value(source, name):
        if name == "PYTHONPATH":  # the same folders in the same order (recipes prepend ROOT once more)
            seen = []
            for entry in (source.get(name) or "").split(os.pathsep):
                entry = os.path.abspath(entry) if entry else ""
                if entry and entry not in seen:
                    seen.append(entry)
            return seen
        return source.get(name)

    names = {k for k in env if sensitive(k)} | {k for k in server_env if sensitive(k)}
    return sorted(k for k in names if value(env, k) != value(server_env, k)
                  and not (k in added and env.get(k) == added[k]))


def _send(conn, obj, fds=()):
    data = json.dumps(obj).encode()
    header = struct.pack("!I", len(data))
    if fds:
        conn.sendmsg([header + data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        conn.sendall(header + data)


def _recv_exact(conn, n, fds_wanted=0):
    buf, fds = b"", []
    while len(buf) < n:
        if fds_wanted and not fds:
            data, anc, _, _ = conn.recvmsg(n - len(buf), socket.CMSG_LEN(fds_wanted * 4))
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds += array.array("i", payload[: len(payload) - len(payload) % 4]).tolist()
        else:
            data = conn.recv(n - len(buf))
        if not data:
            raise EOFError
        buf += data
    return buf, fds


def _recv(conn, fds_wanted=0):
    header, fds = _recv_exact(conn, 4, fds_wanted)
    body, more = _recv_exact(conn, struct.unpack("!I", header)[0])
    return json.loads(body), fds + more


# ------------------------------------------------------------------------------------------------ client
def _parse(argv):
    """(flags, module, args) of ``[-u] [-B] -m MODULE ARGS``, or None for any other command line."""
    flags, i = [], 0
    while i < len(argv) and argv[i] in ("-u", "-B"):
        flags.append(argv[i])
        i += 1
    if i + 1 < len(argv) and argv[i] == "-m":
        return flags, argv[i + 1], argv[i + 2:]
    return None


def client_main(sock_path, real_python):
    """The PRELOADED executable: run ``python ARGV`` through the server, or as a real interpreter."""
    argv = sys.argv[1:]
    parsed = _parse(argv)
    conn = None
    if parsed is not None and os.path.exists(sock_path):
        try:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(sock_path)
        except OSError:
            conn = None
    if conn is None:
        os.execv(real_python, [real_python, *argv])
    flags, module, args = parsed
    env = dict(os.environ)
    if "-u" in flags:
        env["PYTHONUNBUFFERED"] = "1"
    if "-B" in flags:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    _send(conn, {"module": module, "args": args, "env": env, "cwd": os.getcwd()}, fds=(0, 1, 2))
    try:
        reply, _ = _recv(conn)
    except EOFError:
        reply = {"fallback": True}
    if reply.get("fallback"):  # the environment needs a fresh interpreter
        conn.close()
        os.execv(real_python, [real_python, *argv])
    child = reply["pid"]

    import signal

    def forward(signum, _frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        status, _ = _recv(conn)
    except EOFError:
        status = {"status": 1}
    code = status["status"]
    if code < 0:  # killed by a signal: die by it too, as the command's own process would have
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


# ------------------------------------------------------------------------------------------------ server
def _apply_warnoptions(startup_filters):
    """PYTHONWARNINGS as an interpreter applies it at start-up: its filters go behind those the preloaded
    libraries added on import (imported after start-up, those were inserted in front of them)."""
    import warnings

    options = [o for o in os.environ.get("PYTHONWARNINGS", "").split(",") if o.strip()]
    if options == sys.warnoptions:
        return
    added_by_imports = warnings.filters[: len(warnings.filters) - len(startup_filters)]
    warnings.filters[:] = list(startup_filters)
    sys.warnoptions[:] = options
    warnings._processoptions(options)
    warnings.filters[:0] = added_by_imports
    warnings._filters_mutated()


def _run_command(request, fds, added, startup_filters):
    """In the forked child: become ``python -m MODULE ARGS`` and exit with its status."""
    import atexit
    import runpy
    import traceback

    code = 0
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for k, v in added.items():
            os.environ.setdefault(k, v)
        _apply_warnoptions(startup_filters)
        unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
        for stream in (sys.stdout, sys.stderr):
            stream.reconfigure(line_buffering=unbuffered or stream is sys.stderr, write_through=unbuffered)
        import numpy as np
        import torch

        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)))
        np.random.seed(int.from_bytes(os.urandom(4), "little"))
        torch.seed()
        import importlib
        import importlib.util

        sys.path[0] = request["cwd"]  # python -m puts the working folder first
        importlib.invalidate_caches()  # files written since the server listed its folders
        try:
            found = importlib.util.find_spec(request["module"]) is not None
        except ImportError:
            found = False
        if not found:  # python's own words
            print(f"{sys.executable}: No module named {request['module']}", file=sys.stderr)
            raise SystemExit(1)
        sys.argv = [request["module"], *request["args"]]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    except BaseException:
        code = 1
        try:
            sys.excepthook(*sys.exc_info())
        except BaseException:
            traceback.print_exc()
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _wait_for(conn, child):
    """In the waiter: the command's status to the client, or the command killed when the client is gone."""
    import select

    pidfd = os.pidfd_open(child)
    while True:
        ready, _, _ = select.select([pidfd, conn], [], [])
        if pidfd in ready:
            _, status = os.waitpid(child, 0)
            code = os.waitstatus_to_exitcode(status)
            try:
                _send(conn, {"status": code})
            except OSError:
                pass
            return
        if conn in ready:  # the client closed or died: so does the command
            try:
                if conn.recv(1, socket.MSG_PEEK):
                    continue
            except OSError:
                pass
            os.kill(child, 9)
            os.waitpid(child, 0)
            return


def serve(sock_path):
    """Import the third-party modules of the commands, then answer each connection with a forked waiter (which forks the command)."""
    import importlib
    import signal

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    server_env = dict(os.environ)
    import warnings

    startup_filters = list(warnings.filters)  # those of the interpreter's start-up (the server has no -W)
    for name in _third_party_modules():
        try:
            importlib.import_module(name)
        except Exception:  # a module only importable in its package's context: its package imports it
            pass
    import logging

    if logging.getLogger().handlers:  # a library configured logging: the commands would not start as fresh
        print("preload: the imports configured logging, not serving", file=sys.stderr)
        return 1
    # variables the imports set (torch: KMP_*), which a fresh process would set the same way
    added = {k: v for k, v in os.environ.items() if k not in server_env}
    try:  # the waiters watch their command through a pidfd (Linux >= 5.3); without one, do not serve
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError) as e:
        print(f"preload: no pidfd ({e}), not serving", file=sys.stderr)
        return 1
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:  # a fork would copy a process whose other threads (OpenMP's) are gone in the child
        print(f"preload: {threads} threads after the imports, not serving", file=sys.stderr)
        return 1
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # waiters are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path + ".tmp")
    listener.listen(64)
    os.rename(sock_path + ".tmp", sock_path)  # clients see the socket only once it accepts
    while True:
        conn, _ = listener.accept()
        try:
            request, fds = _recv(conn, fds_wanted=3)
        except (EOFError, OSError, ValueError):
            conn.close()
            continue
        differs = _env_differs(request["env"], server_env, added)
        if differs or len(fds) != 3:
            print(f"preload: fallback for {request['module']}: fds {len(fds)}, env differs in {differs}",
                  file=sys.stderr, flush=True)  # the server's log
            _send(conn, {"fallback": True})
            conn.close()
            for fd in fds:
                os.close(fd)
            continue
        if os.fork() == 0:  # the waiter
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            child = os.fork()
            if child == 0:
                conn.close()
                _run_command(request, fds, added, startup_filters)
            for fd in fds:
                os.close(fd)
            try:
                _send(conn, {"pid": child})
                _wait_for(conn, child)
            finally:
                os._exit(0)
        conn.close()
        for fd in fds:
            os.close(fd)


CLIENT = """#!{python} -SE
import sys
sys.path.insert(0, {tests!r})
import preload
preload.client_main({sock!r}, {python!r})
"""


def write_client(folder, sock_path):
    """Write the PRELOADED executable into ``folder``; returns its path."""
    path = os.path.join(folder, "python")
    with open(path, "w") as f:
        f.write(CLIENT.format(python=sys.executable, tests=os.path.dirname(os.path.abspath(__file__)),
                              sock=sock_path))
    os.chmod(path, 0o755)
    return path


# ------------------------------------------------------------------------------------ the test session's side
_state = {}


def start(pythonpath):
    """Start this process's server in the background (idempotent); commands fall back to a real interpreter
    until it is ready. ``pythonpath``: the PYTHONPATH the tests' commands run with."""
    import atexit
    import subprocess
    import tempfile

    if _state or os.environ.get("XLM_TEST_PRELOAD", "1") == "0":
        return
    folder = tempfile.mkdtemp(prefix="xlm-preload-")
    sock = os.path.join(folder, "sock")
    env = dict(os.environ, PYTHONPATH=pythonpath)
    env.setdefault("OMP_NUM_THREADS", "1")
    # the recipes' threading default (recipes/lib/threads.sh): their multi-thread commands match the server
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    log = open(os.path.join(folder, "server.log"), "w")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve", sock], env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    _state.update(proc=proc, client=write_client(folder, sock), folder=folder, env=env)
    atexit.register(stop)


def server_env():
    """The environment the server started with (a command with it runs preloaded), or None."""
    return dict(_state["env"]) if "env" in _state else None


def python():
    """The interpreter for the tests' commands: the preloaded client once started, else sys.executable."""
    return _state.get("client", sys.executable)


def stop():
    """Stop the server (the commands it started have ended with their clients)."""
    import shutil

    proc = _state.pop("proc", None)
    if proc is not None and proc.poll() is None:
        proc.terminate()
        proc.wait()
    folder = _state.pop("folder", None)
    _state.clear()
    if folder and os.environ.get("XLM_TEST_PRELOAD_DEBUG"):
        print(f"preload: server log kept in {folder}/server.log", file=sys.stderr)
    elif folder:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        sys.exit(serve(sys.argv[2]))
    print("usage: preload.py serve SOCKET", file=sys.stderr)
    sys.exit(2)
