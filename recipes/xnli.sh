#!/usr/bin/env bash
# Cross-lingual classification from a pretrained XLM: prepare, binarize, fine-tune, evaluate -> XNLI table.
#   recipes/xnli.sh [--stage N] [--stop-stage N] DATABIN PRETRAINED_CKPT
# DATABIN is the pretraining data-bin (its spm.model and dict.txt are applied); PRETRAINED_CKPT an
# xlm_pretrain checkpoint pretrained on it with --langs $LANGS (same order).
#   stage 1: raw text. With XNLI_DIR: XNLI 1.0 dev/test (+ MNLI_TRAIN, + XNLI_MT_DIR for translate-train);
#            otherwise Bible book genres (fairseq_xlm.cli.bible --labels) for every language of $LANGS
#   stage 2: binarize into DATABIN/$SUBDIR       stage 3: fine-tune (task xnli)
#   stage 4: evaluate every language's test set and append a row to $TABLE
# Zero-shot (default) trains on $TRAIN_LANGS only; TRANSLATE_TRAIN=1 trains one model on every language's
# train set; TRAIN_LANGS=xx EVAL_LANGS=xx (and a TABLE of its own) fine-tunes one model for language xx.
# The schedule is the authors' (glue-xnli.py): epochs of EPOCH_SIZE random training sentences, validated and
# saved at every epoch end, MAX_EPOCH of them; checkpoint_best.pt is the best mean valid accuracy.
# SWEEP=1 fine-tunes every LR of SWEEP_LRS with every BATCH of SWEEP_BATCHES (the authors' grid), selects
# the run with the best mean valid accuracy, writes $WORK/sweep-$RUN.md and its row to $TABLE.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/recipes/lib/env.sh"
check_recipe_env "$0"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
LANGS=${LANGS:-en,es}                 # pretraining languages, in the pretraining order
TRAIN_LANGS=${TRAIN_LANGS:-en}
EVAL_LANGS=${EVAL_LANGS:-}            # validate/test on these; empty: every language with data
TRANSLATE_TRAIN=${TRANSLATE_TRAIN:-0}
XNLI_DIR=${XNLI_DIR:-}                # folder with xnli.dev.tsv, xnli.test.tsv; empty: Bible genres
MNLI_TRAIN=${MNLI_TRAIN:-}            # multinli_1.0_train.jsonl
XNLI_MT_DIR=${XNLI_MT_DIR:-}          # XNLI-MT-1.0/multinli (multinli.train.{lang}.tsv)
TSV=${TSV:-}                          # Bible corpus; default: $XLM_BIBLE_TSV or shared/data
GENRE_VERSES=${GENRE_VERSES:-0,0,0}   # Bible: max verses per language for train,valid,test (0: all)
VALID_FRAC=${VALID_FRAC:-0.05}
TEST_FRAC=${TEST_FRAC:-0.05}
ARCH=${ARCH:-xlm_tiny}
LR=${LR:-0.000025}                    # the authors' Adam lr for encoder and classifier
BATCH=${BATCH:-8}
if [ -n "$XNLI_DIR" ]; then
    EPOCH_SIZE=${EPOCH_SIZE:-20000}   # the authors' --epoch_size 20000 --n_epochs 250
    MAX_EPOCH=${MAX_EPOCH:-250}
else
    EPOCH_SIZE=${EPOCH_SIZE:-4000}    # Bible genres: small settings, 4 x 500 updates of batch 8
    MAX_EPOCH=${MAX_EPOCH:-4}
fi
MAX_UPDATE=${MAX_UPDATE:-0}           # a cap on updates; 0: none (the epochs decide)
VALIDATE_EVERY=${VALIDATE_EVERY:-0}   # N: also validate and save every N updates; 0: at epoch ends only
PATIENCE=${PATIENCE:-0}               # stop after N validations without a better valid mean; 0: off (authors)
GROUP_BY_SIZE=${GROUP_BY_SIZE:-0}     # 1: length-sorted batches (less padding, less random); 0: authors'
SWEEP=${SWEEP:-0}
SWEEP_LRS=${SWEEP_LRS:-0.000005,0.000025,0.000125}
SWEEP_BATCHES=${SWEEP_BATCHES:-4,8}
DEVICE_FLAGS=${DEVICE_FLAGS:-}        # default: --cpu when no GPU is visible
EXTRA=${EXTRA:-}                      # more fairseq-train flags for stage 3, e.g. "--seed 2"
BF16=${BF16:-0}                       # 1: fine-tune in bf16 mixed precision (--autocast-bf16, lib/bf16.sh)
RUN=${RUN:-}                          # run name: row label and checkpoint folder
WORK=${WORK:-work/xnli}
TABLE=${TABLE:-$WORK/table.md}
stage=${stage:-1}
stop_stage=${stop_stage:-4}

usage() {
    echo "usage: $0 [--stage N] [--stop-stage N] DATABIN PRETRAINED_CKPT  (env: LANGS XNLI_DIR TRANSLATE_TRAIN ...)" >&2
    exit 2
}
source "$(dirname "${BASH_SOURCE[0]}")/lib/stages.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib/timeouts.sh"   # DIST_TIMEOUT, HEARTBEAT_TIMEOUT (600 s each)
source "$(dirname "${BASH_SOURCE[0]}")/lib/bf16.sh"
parse_stage_args "$@"
[ "${#POSITIONAL[@]}" -eq 2 ] || usage
DATABIN=${POSITIONAL[0]}
CKPT=${POSITIONAL[1]}
[ -d "$DATABIN" ] || { echo "error: DATABIN $DATABIN is not a folder" >&2; exit 1; }
for var in MAX_EPOCH MAX_UPDATE VALIDATE_EVERY PATIENCE BATCH; do
    [[ "${!var}" =~ ^[0-9]+$ ]] || { echo "error: $var=${!var} is not a whole number" >&2; exit 2; }
done
[[ "$EPOCH_SIZE" =~ ^(-1|[0-9]+)$ ]] ||
    { echo "error: EPOCH_SIZE=$EPOCH_SIZE: sentences per epoch, or -1 (the whole training set)" >&2; exit 2; }
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [ -n "$XNLI_DIR" ]; then TASK_NAME=xnli; else TASK_NAME=genre; fi
SUBDIR=${SUBDIR:-$TASK_NAME}
RAW=$WORK/raw-$TASK_NAME
MODE=zeroshot
[ "$TRANSLATE_TRAIN" = 1 ] && MODE=translate-train
RUN=${RUN:-$TASK_NAME-$MODE-$(basename "$CKPT" .pt)}
SAVE=$WORK/checkpoints/$RUN
if [ -z "$DEVICE_FLAGS" ] && ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    DEVICE_FLAGS=--cpu
fi
# shellcheck disable=SC2086  # flag lists
bf16_flags $DEVICE_FLAGS $EXTRA
# shellcheck disable=SC2086
cpu_threads $DEVICE_FLAGS $EXTRA   # lib/threads.sh: OMP_WAIT_POLICY=PASSIVE, OMP_NUM_THREADS=THREADS on a CPU

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    echo "Stage 1: raw $TASK_NAME text for $LANGS into $RAW"
    if [ -d "$RAW" ]; then
        echo "  $RAW exists, skipping (remove it to extract again)"
    elif [ -n "$XNLI_DIR" ]; then
        extra=()
        [ -n "$MNLI_TRAIN" ] && extra+=(--mnli-train "$MNLI_TRAIN")
        [ -n "$XNLI_MT_DIR" ] && extra+=(--translate-train-dir "$XNLI_MT_DIR")
        rm -rf "$RAW.tmp"
        "$PYTHON" -m fairseq_xlm.cli.prepare_xnli extract --out "$RAW.tmp" --langs "$LANGS" \
            --xnli-dir "$XNLI_DIR" ${extra[@]+"${extra[@]}"}
        mv "$RAW.tmp" "$RAW"
    else
        IFS=, read -r G_TRAIN G_VALID G_TEST <<< "$GENRE_VERSES"
        extra=()
        [ -n "$TSV" ] && extra+=(--tsv "$TSV")
        rm -rf "$RAW.tmp" "$RAW.bible"
        FAIRSEQ_XLM_REGISTER=0 "$PYTHON" -m fairseq_xlm.cli.bible --out "$RAW.bible" --langs "$LANGS" --labels \
            --split-by chapter --valid-frac "$VALID_FRAC" --test-frac "$TEST_FRAC" --train-verses "${G_TRAIN:-0}" \
            --valid-verses "${G_VALID:-0}" --test-verses "${G_TEST:-0}" ${extra[@]+"${extra[@]}"}
        "$PYTHON" -m fairseq_xlm.cli.prepare_xnli extract-bible --bible-raw "$RAW.bible" --out "$RAW.tmp" --langs "$LANGS"
        rm -rf "$RAW.bible"
        mv "$RAW.tmp" "$RAW"
    fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    echo "Stage 2: binarize $RAW with $DATABIN/spm.model and dict.txt into $DATABIN/$SUBDIR"
    [ -d "$RAW" ] || { echo "error: $RAW missing; run stage 1 first" >&2; exit 1; }
    if [ -f "$DATABIN/$SUBDIR/labels.txt" ]; then
        echo "  $DATABIN/$SUBDIR exists, skipping (remove it to binarize again)"
    else
        # labels.txt is written last: its presence marks a finished binarization
        "$PYTHON" -m fairseq_xlm.cli.prepare_xnli binarize --raw "$RAW" --data "$DATABIN" --subdir "$SUBDIR"
    fi
fi

# finetune RUN LR BATCH: one fine-tuning into $WORK/checkpoints/RUN (skipped once finished).
finetune() {
    local run=$1 lr=$2 batch=$3 save=$WORK/checkpoints/$1 flags=()
    if [ -f "$save/finished" ]; then
        echo "  $save/finished exists, skipping"
        return 0
    fi
    flags=(--train-langs "$TRAIN_LANGS")
    [ "$TRANSLATE_TRAIN" = 1 ] && flags=(--translate-train)
    [ -n "$EVAL_LANGS" ] && flags+=(--eval-langs "$EVAL_LANGS")
    [ "$GROUP_BY_SIZE" = 1 ] && flags+=(--group-by-size)
    # fairseq saves only at epoch ends and every --save-interval-updates: a validation in between would
    # never reach checkpoint_best.pt, so VALIDATE_EVERY saves too (keeping one numbered file, removed below).
    [ "$VALIDATE_EVERY" -gt 0 ] && flags+=(--validate-interval-updates "$VALIDATE_EVERY"
        --save-interval-updates "$VALIDATE_EVERY" --keep-interval-updates 1)
    echo "  $run: lr $lr, batch $batch, epochs of $EPOCH_SIZE sentences, at most $MAX_EPOCH epochs" \
         "and $MAX_UPDATE updates (0: no cap)"
    mkdir -p "$save"
    # an interrupted run resumes from $save/checkpoint_last.pt
    "$PYTHON" -m fairseq_cli.train "$DATABIN" "${TIMEOUT_FLAGS[@]}" --user-dir "$ROOT/fairseq_xlm" --task xnli \
        --cls-subdir "$SUBDIR" --langs "$LANGS" "${flags[@]}" --pretrained-xlm-checkpoint "$CKPT" \
        --arch "$ARCH" --criterion xlm_classification --optimizer adam --lr "$lr" --batch-size "$batch" \
        --epoch-size "$EPOCH_SIZE" --max-epoch "$MAX_EPOCH" --max-update "$MAX_UPDATE" --patience "$PATIENCE" \
        --best-checkpoint-metric accuracy --maximize-best-checkpoint-metric \
        --save-dir "$save" --no-epoch-checkpoints --num-workers 0 --log-format simple --log-interval 10 \
        $DEVICE_FLAGS ${BF16_FLAGS[@]+"${BF16_FLAGS[@]}"} $EXTRA 2>&1 | tee "$save/train.log"
    rm -f "$save"/checkpoint_[0-9]*_[0-9]*.pt
    touch "$save/finished"
}

SWEEP_RUNS=()
if [ "$SWEEP" = 1 ]; then
    for lr in ${SWEEP_LRS//,/ }; do
        for batch in ${SWEEP_BATCHES//,/ }; do SWEEP_RUNS+=("$RUN-lr$lr-bs$batch:$lr:$batch"); done
    done
    [ "${#SWEEP_RUNS[@]}" -gt 0 ] || { echo "error: SWEEP=1 with empty SWEEP_LRS or SWEEP_BATCHES" >&2; exit 2; }
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    echo "Stage 3: fine-tune $ARCH from $CKPT ($MODE) into $WORK/checkpoints"
    [ -f "$CKPT" ] || { echo "error: PRETRAINED_CKPT $CKPT not found" >&2; exit 1; }
    if [ "$SWEEP" = 1 ]; then
        for entry in "${SWEEP_RUNS[@]}"; do
            IFS=: read -r name lr batch <<< "$entry"
            finetune "$name" "$lr" "$batch"
        done
    else
        finetune "$RUN" "$LR" "$BATCH"
    fi
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
    echo "Stage 4: test accuracy per language -> $TABLE"
    eval_flags=()
    [ -n "$EVAL_LANGS" ] && eval_flags=(--langs "$EVAL_LANGS")
    ckpts=("$SAVE/checkpoint_best.pt")
    if [ "$SWEEP" = 1 ]; then
        ckpts=()
        for entry in "${SWEEP_RUNS[@]}"; do ckpts+=("$WORK/checkpoints/${entry%%:*}/checkpoint_best.pt"); done
        eval_flags+=(--sweep-out "$WORK/sweep-$RUN.md")
        SAVE=$WORK/checkpoints/$RUN-sweep
    else
        eval_flags+=(--name "$RUN")
    fi
    for ckpt in "${ckpts[@]}"; do
        [ -f "$ckpt" ] || { echo "error: $ckpt missing; run stage 3" >&2; exit 1; }
    done
    if [ -f "$SAVE/evaluated" ]; then
        echo "  $RUN is already in $TABLE, skipping"
    else
        mkdir -p "$(dirname "$TABLE")" "$SAVE"
        "$PYTHON" -m fairseq_xlm.cli.evaluate_xnli "${ckpts[@]}" "$DATABIN" "${eval_flags[@]}" --out "$TABLE"
        touch "$SAVE/evaluated"
    fi
fi
