#!/usr/bin/env bash
# Your own raw corpus -> data-bin/NAME for XLM pretraining (one shared BPE, one joined dictionary).
#   recipes/prepare_pretrain.sh [--stage N] [--stop-stage N] RAW_DIR
# RAW_DIR holds {train,valid,test}.{lang} (one sentence a line; train required for every language) and
# optionally parallel {split}.{l1}-{l2}.{l1|l2}.
#   stage 1: list the inputs   stage 2: BPE + joined dict + binarize   stage 3: read the data-bin back
# LANGS defaults to en,es (the bundled Bible sample's languages): set it for your data, e.g. LANGS=de,en.
# Every language needs train.{lang} and valid.{lang} (prepare stops on a missing valid split).
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
NAME=${NAME:-}
DATABIN=${DATABIN:-}
stage=${stage:-1}
stop_stage=${stop_stage:-3}

usage() {
    echo "usage: $0 [--stage N] [--stop-stage N] RAW_DIR   (env: LANGS (default en,es) VOCAB ALPHA NAME DATABIN ...)" >&2
    exit 2
}
source "$(dirname "${BASH_SOURCE[0]}")/lib/stages.sh"
parse_stage_args "$@"
[ "${#POSITIONAL[@]}" -eq 1 ] || usage
RAW=${POSITIONAL[0]}
[ -d "$RAW" ] || { echo "error: RAW_DIR $RAW is not a folder" >&2; exit 1; }
NAME=${NAME:-$(basename "$RAW")}
DATABIN=${DATABIN:-data-bin/$NAME}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    echo "Stage 1: inputs in $RAW for LANGS=$LANGS"
    for lang in ${LANGS//,/ }; do
        [ -f "$RAW/train.$lang" ] || { echo "error: $RAW/train.$lang missing" >&2; exit 1; }
    done
    wc -l "$RAW"/*.* | sed 's/^/  /'
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    echo "Stage 2: shared BPE ($VOCAB), joined dictionary, binarize into $DATABIN"
    "$PYTHON" -m fairseq_xlm.cli.prepare --raw "$RAW" --destdir "$DATABIN" --langs "$LANGS" \
        --vocab-size "$VOCAB" --alpha "$ALPHA" --sample-lines "$SAMPLE_LINES" \
        --character-coverage "$COVERAGE" --max-line-tokens "$MAX_LINE_TOKENS" --workers "$WORKERS"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    echo "Stage 3: read $DATABIN back"
    "$PYTHON" - "$DATABIN" <<'PY'
import sys
from fairseq.data import data_utils
from fairseq_xlm.data import layout

data_dir = sys.argv[1]
d = layout.load_dictionary(data_dir)
print(f"  dict: {len(d)} symbols with <mask>")
for split in ("train", "valid", "test"):
    mono, pairs = layout.available(data_dir, split)
    prefixes = [layout.mono_prefix(data_dir, split, l) for l in mono]
    prefixes += [layout.para_prefix(data_dir, split, *p.split("-"), lang) for p in pairs for lang in p.split("-")]
    for prefix in prefixes:
        ds = data_utils.load_indexed_dataset(prefix, d)
        print(f"  {prefix}: {len(ds)} lines, {int(ds.sizes.sum())} tokens")
PY
fi
