"""``--max-skips N``: fail a pytest run in which more than N tests skip.

A test that needs ``../shared`` (the Bible corpus, the authors' code) skips without it, so a CI checkout that
lost its copy would otherwise report green with a third of the suite unrun. ``.ci/run`` passes the number of
skips expected on CI (see docs/testing.md). Works under pytest-xdist: the controller receives every worker's
reports. Loaded by tests/conftest.py (its hooks are imported there), or with ``-p skip_budget``.
"""

SKIPPED = []  # (node id, reason) of every skipped test this process saw


def pytest_addoption(parser):
    parser.addoption("--max-skips", type=int, default=None, metavar="N",
                     help="fail the run when more than N tests skip (expected skips: docs/testing.md)")


def pytest_runtest_logreport(report):
    """Count skipped tests (a skip in a fixture is a skipped setup; xfail is not a skip)."""
    if report.skipped and not hasattr(report, "wasxfail") and report.when in ("setup", "call"):
        SKIPPED.append((report.nodeid, _reason(report)))


def pytest_sessionfinish(session, exitstatus):
    limit = session.config.getoption("max_skips")
    if limit is None or hasattr(session.config, "workerinput"):  # workers report; the controller decides
        return
    if len(SKIPPED) > limit:
        reasons = {}
        for _, reason in SKIPPED:
            reasons[reason] = reasons.get(reason, 0) + 1
        lines = "\n".join(f"  {n} x {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
        session.config.get_terminal_writer().line(
            f"\nerror: {len(SKIPPED)} tests skipped, more than --max-skips {limit}; their reasons:\n{lines}",
            red=True)
        session.exitstatus = 1


def _reason(report) -> str:
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr)
