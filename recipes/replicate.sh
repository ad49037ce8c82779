#!/usr/bin/env bash
# `make replicate` (the paper's orderings at small scale) runs in Python now: this wrapper keeps the old command
# line working. The settings are the same environment variables (QUICK=1, SMOKE=1, OUT, SEEDS, CLAIMS, LANGS,
# PAIR, LOW, ...; docs/replicate.md), the arguments the same ([--stage N] [--stop-stage N] [RAW_DIR]), plus the
# runner's flags (--launcher slurm, --jobs N, ...: python -m fairseq_xlm.cli.replicate run --help).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PYTHON" ] || { echo "error: $PYTHON not found: run 'make replicate' (it creates .venv) or set PYTHON" >&2; exit 1; }
export PYTHON PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m fairseq_xlm.cli.replicate run "$@"
