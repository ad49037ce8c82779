#!/usr/bin/env bash
# updates/s of `recipes/pretrain.sh SCALE=small` before and after the recipes' threading default
# (recipes/lib/threads.sh), with and without one extra busy process, alternated in one run so that the
# machine's other load falls on every arm alike (docs/pretraining.md, "Threads").
#   bench/threads_busy.sh BEFORE_ROOT AFTER_ROOT DATA_BIN [ROUNDS]
# BEFORE_ROOT / AFTER_ROOT: checkouts whose recipes/pretrain.sh to run (e.g. main and this branch).
# Prints one row per run and the mean updates/s per arm; MAX_UPDATE (default 100) updates per run.
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,7p' "$0" >&2; exit 2; }
before=$1 after=$2 data=$3 rounds=${4:-2}
PYTHON=${PYTHON:-python3}
MAX_UPDATE=${MAX_UPDATE:-100}
work=$(mktemp -d)
trap 'rm -rf "$work"; [ -n "${busy:-}" ] && kill "$busy" 2>/dev/null || true' EXIT

run() {  # run ROOT: updates/s of one pretrain.sh run (fairseq's "done training in X seconds": no start-up)
    local root=$1 secs
    rm -rf "$work/save"
    env -u OMP_NUM_THREADS -u OMP_WAIT_POLICY -u THREADS SCALE=small MAX_UPDATE="$MAX_UPDATE" SAVE_EVERY=0 \
        PYTHON="$PYTHON" PYTHONPATH="$root" bash "$root/recipes/pretrain.sh" mlm "$data" "$work/save" --cpu \
        --disable-validation --no-save --log-interval 1000 > "$work/log" 2>&1
    secs=$(grep -oE 'done training in [0-9.]+ seconds' "$work/log" | grep -oE '[0-9.]+')
    awk -v n="$MAX_UPDATE" -v s="$secs" 'BEGIN { printf "%.2f", n / s }'
}

echo "| round | extra busy process | before (updates/s) | after (updates/s) |"
echo "|---|---|---:|---:|"
declare -A sum=()
for ((r = 1; r <= rounds; r++)); do
    for load in no yes; do
        busy=
        if [ "$load" = yes ]; then "$PYTHON" -c 'while 1: pass' & busy=$!; fi
        b=$(run "$before"); a=$(run "$after")
        [ -n "$busy" ] && { kill "$busy"; wait "$busy" 2>/dev/null || true; busy=; }
        echo "| $r | $load | $b | $a |"
        sum[$load-b]=$(awk -v x="${sum[$load-b]:-0}" -v y="$b" 'BEGIN { print x + y }')
        sum[$load-a]=$(awk -v x="${sum[$load-a]:-0}" -v y="$a" 'BEGIN { print x + y }')
    done
done
for load in no yes; do
    awk -v l="$load" -v b="${sum[$load-b]}" -v a="${sum[$load-a]}" -v n="$rounds" \
        'BEGIN { printf "| mean | %s | %.2f | %.2f (x%.1f) |\n", l, b / n, a / n, a / b }'
done
