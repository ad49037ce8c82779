#!/usr/bin/env bash
# Real Bible text (en/es/ny, verse-aligned) -> raw splits by chapter -> data-bin/NAME with one shared BPE.
#   recipes/prepare_bible.sh [--stage N] [--stop-stage N]
#   stage 1: extract raw text (fairseq_xlm.cli.bible)   stage 2: BPE + joined dict + binarize (fairseq_xlm.cli.prepare)
# Every variable below can be set from the environment, e.g. LANGS=en,es,ny PAIRS=en-es,en-ny VOCAB=16000.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/recipes/lib/env.sh"
check_recipe_env "$0"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
LANGS=${LANGS:-en,es}                # monolingual languages (MLM/CLM streams)
PAIRS=${PAIRS:-en-es}                # parallel pairs (TLM, MT valid/test); empty for none
VOCAB=${VOCAB:-8000}                 # shared sentencepiece BPE size
ALPHA=${ALPHA:-0.5}                  # language smoothing of the BPE sample
SAMPLE_LINES=${SAMPLE_LINES:-1000000}
NAME=${NAME:-bible}
RAW=${RAW:-data/raw/$NAME}
DATABIN=${DATABIN:-data-bin/$NAME}
TSV=${TSV:-}                         # default: $XLM_BIBLE_TSV or shared/data beside the checkout
SPLIT_BY=${SPLIT_BY:-chapter}        # chapter | book: held-out units, never single verses
VALID_FRAC=${VALID_FRAC:-0.02}
TEST_FRAC=${TEST_FRAC:-0.02}
MONO_VERSES=${MONO_VERSES:-0,0,0}    # max verses per language for train,valid,test (0: all)
PARA_VERSES=${PARA_VERSES:-0,0,0}    # max pairs per pair for train,valid,test (0: all)
DISJOINT=${DISJOINT:-0}              # 1: mono and parallel text from different chapters (MLM vs TLM data)
WORKERS=${WORKERS:-1}
stage=${stage:-1}
stop_stage=${stop_stage:-2}

usage() {
    echo "usage: $0 [--stage N] [--stop-stage N]   (stages: 1 extract, 2 binarize; settings via env, see top of file)" >&2
    exit 2
}
source "$(dirname "${BASH_SOURCE[0]}")/lib/stages.sh"
parse_stage_args "$@"
[ "${#POSITIONAL[@]}" -eq 0 ] || { echo "unexpected argument: ${POSITIONAL[0]}" >&2; usage; }
IFS=, read -r MONO_TRAIN MONO_VALID MONO_TEST <<< "$MONO_VERSES"
IFS=, read -r PARA_TRAIN PARA_VALID PARA_TEST <<< "$PARA_VERSES"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cpu_threads --cpu   # lib/threads.sh: OMP_WAIT_POLICY=PASSIVE, OMP_NUM_THREADS=THREADS

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    echo "Stage 1: extract Bible text ($LANGS; pairs ${PAIRS:-none}) into $RAW"
    if [ -d "$RAW" ]; then
        echo "  $RAW exists, skipping (remove it to extract again)"
    else
        extra=()
        [ -n "$TSV" ] && extra+=(--tsv "$TSV")
        [ "$DISJOINT" = 1 ] && extra+=(--disjoint-para)
        rm -rf "$RAW.tmp"
        FAIRSEQ_XLM_REGISTER=0 "$PYTHON" -m fairseq_xlm.cli.bible --out "$RAW.tmp" --langs "$LANGS" --pairs "$PAIRS" \
            --split-by "$SPLIT_BY" --valid-frac "$VALID_FRAC" --test-frac "$TEST_FRAC" --labels --ids \
            --train-verses "${MONO_TRAIN:-0}" --valid-verses "${MONO_VALID:-0}" --test-verses "${MONO_TEST:-0}" \
            --para-train-verses "${PARA_TRAIN:-0}" --para-valid-verses "${PARA_VALID:-0}" \
            --para-test-verses "${PARA_TEST:-0}" ${extra[@]+"${extra[@]}"}
        mv "$RAW.tmp" "$RAW"
    fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    echo "Stage 2: shared BPE ($VOCAB), joined dictionary, binarize into $DATABIN"
    [ -d "$RAW" ] || { echo "error: $RAW missing; run stage 1 first" >&2; exit 1; }
    # prepare skips its own finished sub-stages (markers in $DATABIN/prep)
    "$PYTHON" -m fairseq_xlm.cli.prepare --raw "$RAW" --destdir "$DATABIN" --langs "$LANGS" \
        --vocab-size "$VOCAB" --alpha "$ALPHA" --sample-lines "$SAMPLE_LINES" --workers "$WORKERS"
fi
