#!/usr/bin/env bash
# Run the twin of one of the paper's experiments here, on the Bible sample, in minutes on a CPU:
#   recipes/twin.sh EXPERIMENT          (make twin EXP=EXPERIMENT; the names: python -m fairseq_xlm.cli.plan --list)
# The twin is the experiment's configs (configs/) with the sizes of configs/experiments.yaml's twin_sizes.
# Its data-bin, made once: data-bin/twin (Bible en, es, ny; en-es pairs; xnli/ from the XNLI-format test
# fixtures); its runs: data-bin/twin-runs/EXPERIMENT (stamped: a rerun skips finished stages).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/recipes/lib/env.sh"
check_recipe_env "$0" "$ROOT/recipes/prepare_bible.sh"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
DATABIN=${DATABIN:-data-bin/twin}
SAVE=${SAVE:-data-bin/twin-runs}
[ $# -eq 1 ] || { echo "usage: $0 EXPERIMENT   (the list: $PYTHON -m fairseq_xlm.cli.plan --list)" >&2; exit 2; }
exp=$1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
"$PYTHON" -m fairseq_xlm.cli.plan --list | grep -q "^$exp " || {
    echo "error: unknown experiment '$exp'; the list: $PYTHON -m fairseq_xlm.cli.plan --list" >&2; exit 2; }
if [ ! -f "$DATABIN/dict.txt" ]; then
    LANGS=en,es,ny PAIRS=en-es VOCAB=1000 MONO_VERSES=600,80,80 PARA_VERSES=300,60,60 NAME=twin \
        DATABIN="$DATABIN" RAW="$DATABIN.raw" PYTHON="$PYTHON" bash "$ROOT/recipes/prepare_bible.sh"
fi
if [ ! -f "$DATABIN/xnli/labels.txt" ]; then
    fixtures=$ROOT/tests/fixtures/xnli
    rm -rf "$DATABIN/xnli.raw"
    "$PYTHON" -m fairseq_xlm.cli.prepare_xnli extract --out "$DATABIN/xnli.raw" --langs en,es --xnli-dir "$fixtures" \
        --mnli-train "$fixtures/multinli_1.0_train.jsonl" --translate-train-dir "$fixtures"
    "$PYTHON" -m fairseq_xlm.cli.prepare_xnli binarize --raw "$DATABIN/xnli.raw" --data "$DATABIN"
fi
"$PYTHON" -m fairseq_xlm.cli.plan "$exp" --twin --run --data "$DATABIN" --save "$SAVE/$exp"
