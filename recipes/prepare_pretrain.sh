#!/usr/bin/env bash
# Your own raw corpus -> data-bin/NAME for XLM pretraining (one shared BPE, one joined dictionary).
#   recipes/prepare_pretrain.sh [--stage N] [--stop-stage N] RAW_DIR
# RAW_DIR holds {train,valid,test}.{lang} (one sentence a line; train required for every language) and
# optionally parallel {split}.{l1}-{l2}.{l1|l2}.
#   stage 1: list the inputs   stage 2: BPE + joined dict + binarize   stage 3: read the data-bin back
# LANGS defaults to en,es (the bundled Bible sample's languages): set it for your data, e.g. LANGS=de,en.
# Every language needs train.{lang} and valid.{lang} (prepare stops on a missing valid split).
# SHARDS=N (default 1) splits the training text into N data-bins DATABIN/shard0 .. shardN-1 (one dictionary and
# BPE; valid/test in shard0; each shard redone alone after a crash): recipes/pretrain.sh DATABIN then trains
# on one shard per epoch, and no process opens more than one shard's files at a time.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/recipes/lib/env.sh"
check_recipe_env "$0"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
LANGS=${LANGS:-en,es}
VOCAB=${VOCAB:-8000}
ALPHA=${ALPHA:-0.5}
SAMPLE_LINES=${SAMPLE_LINES:-1000000}
COVERAGE=${COVERAGE:-1.0}             # sentencepiece character coverage (~0.9995 for CJK-sized alphabets)
MAX_LINE_TOKENS=${MAX_LINE_TOKENS:-0} # drop lines longer than this many BPE tokens (0: keep, they are cut into blocks)
WORKERS=${WORKERS:-1}
SHARDS=${SHARDS:-1}
NAME=${NAME:-}
DATABIN=${DATABIN:-}
stage=${stage:-1}
stop_stage=${stop_stage:-3}

usage() {
    echo "usage: $0 [--stage N] [--stop-stage N] RAW_DIR   (env: LANGS (default en,es) VOCAB ALPHA NAME DATABIN" \
         "SHARDS ...)" >&2
    exit 2
}
source "$(dirname "${BASH_SOURCE[0]}")/lib/stages.sh"
parse_stage_args "$@"
[ "${#POSITIONAL[@]}" -eq 1 ] || usage
RAW=${POSITIONAL[0]}
[ -d "$RAW" ] || { echo "error: RAW_DIR $RAW is not a folder" >&2; exit 1; }
[[ "$SHARDS" =~ ^[1-9][0-9]*$ ]] || { echo "error: SHARDS=$SHARDS: expected a number of shards (>= 1)" >&2; exit 1; }
if [ -z "$NAME" ] && [ -z "$DATABIN" ]; then
    NAME=$(basename "$RAW")
    echo "NAME not set: the data-bin is data-bin/$NAME (the raw folder's name; set NAME or DATABIN to choose)"
fi
NAME=${NAME:-$(basename "$RAW")}
DATABIN=${DATABIN:-data-bin/$NAME}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cpu_threads --cpu   # lib/threads.sh: OMP_WAIT_POLICY=PASSIVE, OMP_NUM_THREADS=THREADS

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    echo "Stage 1: inputs in $RAW for LANGS=$LANGS"
    for lang in ${LANGS//,/ }; do
        [ -f "$RAW/train.$lang" ] || { echo "error: $RAW/train.$lang missing" >&2; exit 1; }
    done
    wc -l "$RAW"/*.* | sed 's/^/  /'
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    echo "Stage 2: shared BPE ($VOCAB), joined dictionary, binarize into $DATABIN (SHARDS=$SHARDS)"
    "$PYTHON" -m fairseq_xlm.cli.prepare --raw "$RAW" --destdir "$DATABIN" --langs "$LANGS" \
        --vocab-size "$VOCAB" --alpha "$ALPHA" --sample-lines "$SAMPLE_LINES" \
        --character-coverage "$COVERAGE" --max-line-tokens "$MAX_LINE_TOKENS" --workers "$WORKERS" \
        --shards "$SHARDS"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    source "$ROOT/recipes/lib/databin.sh"
    data_path=$(databin_path "$DATABIN" "$SHARDS") || exit 1
    echo "Stage 3: read $DATABIN back (data path: $data_path)"
    "$PYTHON" - "$data_path" <<'PY'
import sys
from fairseq_xlm.data import layout

for data_dir in layout.shard_dirs(sys.argv[1]):
    d = layout.load_dictionary(data_dir)
    print(f"  {data_dir}: dict: {len(d)} symbols with <mask>")
    for split in ("train", "valid", "test"):
        mono, pairs = layout.available(data_dir, split)
        prefixes = [layout.mono_prefix(data_dir, split, l) for l in mono]
        prefixes += [layout.para_prefix(data_dir, split, *p.split("-"), lang) for p in pairs for lang in p.split("-")]
        for prefix in prefixes:
            ds = layout.load_split(prefix, d, data_dir)  # checked against the manifest; the index only is read
            print(f"  {prefix}: {len(ds)} lines, {int(ds.sizes.sum())} tokens")
PY
fi
