"""Stamped, resumable jobs run by a pool over submitit's executors: local processes or a SLURM cluster.

A ``Job`` is a name, a module-level function and its arguments; the function gets a ``JobLog`` first, through
which it runs its commands (their output goes to ``LOGS/NAME.log``, and to a file of the job's own where it
asks). A job that returns stamps itself: ``DONE/NAME`` holds its seconds, written by the job itself (on a
cluster the stamp is on the shared file system even if the runner is gone). ``run_pool`` skips stamped jobs,
submits the others, at most ``max_parallel`` at once, and when one failed, stops after the running ones end
with the tail of each failed log.

Why submitit: it is maintained (facebookincubator), it is what hydra's submitit launcher is built on, and its
``AutoExecutor`` runs the same pickled function as a local process (``cluster="local"``) or as a SLURM job
(``cluster="slurm"``). hydra's launcher itself needs a hydra app whose sweep is one flat list of runs; a study
is stages of jobs that depend on the stage before (pretraining, then fine-tuning from its checkpoints), so the
runner keeps the stages and hands each stage's jobs to submitit directly.

``Settings`` is the study folder's lock: stamps mean something only for the settings that made them, so a
folder made with other settings is refused.
"""

import contextlib
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

# This module imports nothing of fairseq_xlm, so that a job whose function lives elsewhere (a test's, pickled by
# value) starts without importing torch and fairseq.

# A job's worker process only runs commands and reads their output files: it imports fairseq_xlm's pure-Python
# study modules with FAIRSEQ_XLM_REGISTER=0 (no torch, no fairseq: about 7 s of CPU less per job), and the
# commands it runs get the variable removed, so that fairseq's --user-dir registers the plugin as usual.
WORKER_ENV = {"FAIRSEQ_XLM_REGISTER": "0"}


@contextlib.contextmanager
def _worker_env():
    """The environment submitit copies into a worker (locally at submit time; sbatch exports it too)."""
    saved = {k: os.environ.get(k) for k in WORKER_ENV}
    os.environ.update(WORKER_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class StudyError(RuntimeError):
    """A study that cannot go on: a failed job, a folder made with other settings (exit status 1)."""


class SettingsError(ValueError):
    """Settings that are wrong before anything runs: a bad variable or flag (exit status 2)."""


class CommandFailed(StudyError):
    """A command of a job exited with a non-zero status."""


# ----------------------------------------------------------------------------------------------- a job
@dataclass(frozen=True)
class Job:
    """``fn(log, *args)`` under the name ``name`` (unique in a study: it names the log and the stamp)."""

    name: str
    fn: Callable
    args: tuple = ()


class JobLog:
    """A job's log file and the commands it runs (each appends its output to the log)."""

    def __init__(self, path: str):
        self.path = path

    def write(self, text: str) -> None:
        """Append ``text`` to the log."""
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)

    def run(self, argv: Sequence[str], env: Optional[Dict[str, str]] = None, tee: Optional[str] = None,
            stdout: Optional[str] = None, merge: bool = False) -> None:
        """Run ``argv`` (``env``: variables added to the environment). Its output goes to the log; with ``tee``
        to the file ``tee`` as well (``| tee FILE``); with ``stdout`` its standard output goes to that file
        instead (written as FILE.tmp, renamed once the command succeeded; ``merge``: standard error too).
        A non-zero exit raises CommandFailed."""
        full_env = {k: v for k, v in os.environ.items() if k not in WORKER_ENV}
        full_env.update(env or {})
        argv = [str(a) for a in argv]
        with open(self.path, "a", encoding="utf-8") as log:
            log.write(f"+ {' '.join(argv)}\n")
            log.flush()
            if stdout is not None:
                with open(stdout + ".tmp", "w", encoding="utf-8") as out:
                    rc = subprocess.call(argv, env=full_env, stdout=out, stderr=out if merge else log)
                if rc == 0:
                    os.replace(stdout + ".tmp", stdout)
            elif tee is not None:
                with open(tee, "w", encoding="utf-8") as copy:
                    proc = subprocess.Popen(argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                            text=True, errors="replace")
                    for line in proc.stdout:
                        log.write(line)
                        copy.write(line)
                    rc = proc.wait()
            else:
                rc = subprocess.call(argv, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        if rc != 0:
            raise CommandFailed(f"exit status {rc}: {' '.join(argv)}")


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def command(log: JobLog, argv: Sequence[str], env: Optional[Dict[str, str]] = None) -> None:
    """A job that is one command."""
    log.run(argv, env)


def execute(job: Job, done_dir: str, log_dir: str) -> float:
    """Run ``job`` (in a submitit worker, or in this process): log to LOG_DIR/NAME.log, then stamp
    DONE_DIR/NAME with its seconds. Returns the seconds; a failure leaves no stamp and re-raises."""
    log = JobLog(os.path.join(log_dir, f"{job.name}.log"))
    open(log.path, "w").close()
    t0 = time.monotonic()
    try:
        job.fn(log, *job.args)
    except BaseException:
        log.write(traceback.format_exc())
        raise
    seconds = time.monotonic() - t0
    _write(os.path.join(done_dir, job.name), f"{round(seconds)}\n")
    return seconds


def stamp_seconds(done_dir: str, name: str) -> Optional[str]:
    """The seconds in the stamp DONE_DIR/NAME, or None when the job is not done."""
    path = os.path.join(done_dir, name)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


# ------------------------------------------------------------------------------------------- executors
@dataclass
class Launcher:
    """Where jobs run: ``local`` (processes on this machine) or ``slurm`` (one SLURM job each), both through
    submitit's AutoExecutor; ``slurm`` takes ``partition``, ``gpus_per_job``, ``timeout_min`` and any other
    ``slurm_*`` parameter of submitit in ``extra`` (e.g. {"slurm_account": "abc"})."""

    cluster: str = "local"
    max_parallel: int = 2
    timeout_min: int = 24 * 60
    gpus_per_job: int = 0
    cpus_per_job: int = 1
    partition: Optional[str] = None
    extra: Dict[str, object] = field(default_factory=dict)
    poll_s: float = 0.2

    def executor(self, folder: str):
        """A submitit executor writing its own files (pickles, stdout/stderr of each job) under ``folder``."""
        import submitit

        if self.cluster not in ("local", "slurm"):
            raise SettingsError(f"launcher {self.cluster!r}: expected local or slurm")
        ex = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
        params = dict(timeout_min=self.timeout_min, gpus_per_node=self.gpus_per_job,
                      cpus_per_task=self.cpus_per_job, nodes=1, tasks_per_node=1, name="fairseq_xlm")
        if self.cluster == "slurm":
            if self.partition:
                params["slurm_partition"] = self.partition
            params.update(self.extra)
        ex.update_parameters(**params)
        return ex


def run_pool(jobs: Sequence[Job], done_dir: str, log_dir: str, launcher: Launcher,
             echo: Callable[[str], None] = print) -> List[str]:
    """Run the jobs of ``jobs`` that have no stamp, at most ``launcher.max_parallel`` at once; returns the names
    of the jobs that ran. When a job failed: no new job starts, the running ones end, then StudyError with the
    tail of every failed job's log."""
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"two jobs of one name in {names}")
    os.makedirs(done_dir, exist_ok=True)
    os.makedirs(log_dir, exist_ok=True)
    todo = []
    for job in jobs:
        seconds = stamp_seconds(done_dir, job.name)
        if seconds is None:
            todo.append(job)
        else:
            echo(f"  {job.name}: done ({seconds} s), skipping")
    if not todo:
        return []
    executor = launcher.executor(os.path.join(os.path.dirname(os.path.abspath(done_dir)), "submitit"))
    running: Dict[str, object] = {}
    failed: List[str] = []
    started: List[str] = []
    pending = list(todo)
    try:
        while pending or running:
            while pending and not failed and len(running) < launcher.max_parallel:
                job = pending.pop(0)
                with _worker_env():
                    running[job.name] = executor.submit(execute, job, done_dir, log_dir)
                started.append(job.name)
                echo(f"  {job.name}: started")
            if failed:
                pending = []
            time.sleep(launcher.poll_s)
            for name, sjob in list(running.items()):
                if not sjob.done():
                    continue
                del running[name]
                seconds = stamp_seconds(done_dir, name)
                if seconds is None:
                    failed.append(name)
                    echo(f"  {name}: FAILED (log: {os.path.join(log_dir, name + '.log')})")
                else:
                    echo(f"  {name}: done in {seconds} s")
    except BaseException:
        for sjob in running.values():  # Ctrl-C: running jobs do not outlive the runner
            sjob.cancel(check=False)
        raise
    if failed:
        for name in failed:
            path = os.path.join(log_dir, f"{name}.log")
            tail = open(path, encoding="utf-8", errors="replace").read().splitlines()[-20:] if \
                os.path.isfile(path) else ["(no log: the job did not start; see the submitit folder)"]
            sys.stderr.write(f"--- {path} (last lines)\n" + "\n".join(tail) + "\n")
        raise StudyError(f"{len(failed)} job(s) failed: {' '.join(failed)}")
    return started


# ------------------------------------------------------------------------------------- the folder's lock
def lock_settings(path: str, settings: str) -> None:
    """Write ``settings`` to ``path`` on a study's first run; refuse (StudyError) a folder made with others."""
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            found = f.read().rstrip("\n")
        if found != settings:
            folder = os.path.dirname(os.path.dirname(os.path.abspath(path)))
            raise StudyError(f"{folder} was made with other settings ({found}); remove it or set OUT")
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _write(path, settings + "\n")
