#!/usr/bin/env bash
# Unsupervised MT from an XLM initialisation (Lample & Conneau 2019, section 5.2), the whole flow:
#   recipes/umt.sh [--stage N] [--stop-stage N]
#   stage 1: Bible data-bin (recipes/prepare_bible.sh)    stage 2: MLM pretraining (xlm_pretrain)
#   stage 3: denoising + online back-translation (+ MT steps) from the pretrained encoder and decoder
#   stage 4: BLEU of each direction on SPLIT (recipes/evaluate_mt.sh), written to $SAVE/bleu.*
# Every variable below can be set from the environment. The defaults are tiny (CPU, minutes); the paper's
# en-fr run is ARCH=xlm_mlm_enfr_1024 (or PRETRAINED=a converted mlm_enfr_1024 checkpoint), MAX_TOKENS=2000,
# LR=1e-4 with WARMUP=4000, LAMBDA_AE='0:1,100000:0.1,300000:0', on a GPU, for days.
# Units, as the authors': one fairseq update is one step of one kind (one optimiser step), so WARMUP,
# MAX_UPDATE and the learning-rate decay count steps (4 per iteration here: AE L1, AE L2, BT twice), while
# the LAMBDA_* schedules count iterations (one pass of the AE, MT, BT step loop).
# recipes/supervised_mt.sh runs this flow with MT steps (and optional BT steps) instead.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
USER_DIR=${USER_DIR:-$ROOT/fairseq_xlm}
source "$ROOT/recipes/lib/env.sh"
check_recipe_env "$0" "$ROOT/recipes/prepare_bible.sh" "$ROOT/recipes/evaluate_mt.sh"
renamed_var MAX_UPDATES MAX_UPDATE        # the old names, before one naming across recipes
renamed_var PRE_UPDATES PRE_MAX_UPDATE
L1=${L1:-en}
L2=${L2:-es}
LANGS=${LANGS:-$L1,$L2}                # the model's languages in stage 3: the pretrained checkpoint's, in its order
NAME=${NAME:-bible}
DATABIN=${DATABIN:-data-bin/$NAME}
EXP=${EXP:-umt}
SAVE=${SAVE:-checkpoints/$NAME/$EXP}
ARCH=${ARCH:-xlm_tiny}                 # pretraining architecture; MT uses its twin xlm_mt_*
PRETRAINED=${PRETRAINED:-}             # an xlm_transformer checkpoint: skips stage 2
PRE_SAVE=${PRE_SAVE:-checkpoints/$NAME/mlm}
PRE_STEPS=${PRE_STEPS:-$L1,$L2}        # --mlm-steps of pretraining (add $L1-$L2 for TLM)
PRE_MAX_UPDATE=${PRE_MAX_UPDATE:-2000}
AE_STEPS=${AE_STEPS-$L1,$L2}
BT_STEPS=${BT_STEPS-$L1-$L2-$L1,$L2-$L1-$L2}
MT_STEPS=${MT_STEPS-}
LAMBDA_AE=${LAMBDA_AE:-0:1,250:0.1,750:0}  # iterations: 750 = MAX_UPDATE / 4 steps per iteration
LAMBDA_BT=${LAMBDA_BT:-1}
LAMBDA_MT=${LAMBDA_MT:-1}
WORD_SHUFFLE=${WORD_SHUFFLE:-3}
WORD_DROPOUT=${WORD_DROPOUT:-0.1}
WORD_BLANK=${WORD_BLANK:-0.1}
BT_BEAM=${BT_BEAM:-1}
MAX_TOKENS=${MAX_TOKENS:-2000}
MAX_UPDATE=${MAX_UPDATE:-3000}
LR=${LR:-1e-4}
WARMUP=${WARMUP:-400}
VALID_EVERY=${VALID_EVERY:-500}        # updates between validations (BLEU of both directions) and saves; the
                                       # last update is always validated and saved
EPOCH_SIZE=${EPOCH_SIZE:-0}            # > 0: epochs of this many sentences (the authors' --epoch_size, 200000
                                       # for their UMT runs); validation, checkpoints and PATIENCE per epoch
BEST=${BEST:-bleu_${L1}_${L2}}         # checkpoint_best.pt maximises this metric (tok_bleu_*: the paper's BLEU)
PATIENCE=${PATIENCE:--1}               # stop after this many validations without a better BEST (authors: 10)
SPLIT=${SPLIT:-test}
BEAM=${BEAM:-5}
EXTRA=${EXTRA:-}                       # more fairseq-train flags for stage 3, e.g. "--fp16"
BF16=${BF16:-0}                        # 1: stages 2 and 3 in bf16 mixed precision (--autocast-bf16, lib/bf16.sh)
stage=${stage:-1}
stop_stage=${stop_stage:-4}

usage() {
    echo "usage: $0 [--stage N] [--stop-stage N]   (stages: 1 data, 2 pretrain, 3 train MT, 4 evaluate;" \
         "settings via env, see top of file)" >&2
    exit 2
}
source "$(dirname "${BASH_SOURCE[0]}")/lib/stages.sh"
source "$(dirname "${BASH_SOURCE[0]}")/lib/timeouts.sh"   # DIST_TIMEOUT, HEARTBEAT_TIMEOUT (600 s each)
source "$(dirname "${BASH_SOURCE[0]}")/lib/bf16.sh"
parse_stage_args "$@"
[ "${#POSITIONAL[@]}" -eq 0 ] || { echo "unexpected argument: ${POSITIONAL[0]}" >&2; usage; }
[ "$L1" != "$L2" ] || { echo "error: L1 and L2 are both $L1" >&2; exit 1; }
[ -n "$AE_STEPS$BT_STEPS$MT_STEPS" ] || { echo "error: AE_STEPS, BT_STEPS and MT_STEPS are all empty" >&2; exit 1; }
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
MT_ARCH=xlm_mt_${ARCH#xlm_}
PRETRAINED=${PRETRAINED:-$PRE_SAVE/checkpoint_last.pt}
if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 2 ]; then
    # shellcheck disable=SC2086  # EXTRA is a list of flags
    bf16_flags $EXTRA
fi
# shellcheck disable=SC2086  # EXTRA is a list of flags
cpu_threads $EXTRA   # lib/threads.sh: OMP_WAIT_POLICY=PASSIVE, OMP_NUM_THREADS=THREADS on a CPU

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    echo "Stage 1: data-bin $DATABIN ($L1,$L2 monolingual; $L1-$L2 parallel for validation)"
    bible_langs=" en es ny "             # the languages of the Bible corpus stage 1 reads (shared/data/README.md)
    if [ -d "$DATABIN" ]; then
        echo "  $DATABIN exists, skipping"
    elif [[ "$bible_langs" != *" $L1 "* || "$bible_langs" != *" $L2 "* ]]; then
        echo "error: DATABIN $DATABIN does not exist, and stage 1 can only build the Bible's (en, es, ny), not" \
             "$L1-$L2: set DATABIN to your data-bin (recipes/prepare_pretrain.sh makes data-bin/NAME), or NAME" >&2
        exit 1
    else
        LANGS="$L1,$L2" PAIRS="$L1-$L2" NAME="$NAME" DATABIN="$DATABIN" bash "$ROOT/recipes/prepare_bible.sh"
    fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    echo "Stage 2: MLM pretraining ($ARCH, steps $PRE_STEPS) into $PRE_SAVE"
    if [ -f "$PRETRAINED" ] && [ "$PRETRAINED" != "$PRE_SAVE/checkpoint_last.pt" ]; then
        echo "  using PRETRAINED=$PRETRAINED, skipping"
    else
        # fairseq resumes from $PRE_SAVE/checkpoint_last.pt, so a finished run returns at once
        "$PYTHON" -m fairseq_cli.train "$DATABIN" "${TIMEOUT_FLAGS[@]}" --user-dir "$USER_DIR" --task xlm_pretrain \
            --langs "$L1,$L2" --mlm-steps "$PRE_STEPS" --criterion xlm_lm --arch "$ARCH" \
            --optimizer adam --adam-betas '(0.9,0.98)' --lr "$LR" --lr-scheduler inverse_sqrt \
            --warmup-updates "$WARMUP" --clip-norm 5 --max-tokens "$MAX_TOKENS" --max-update "$PRE_MAX_UPDATE" \
            --save-dir "$PRE_SAVE" --no-epoch-checkpoints --num-workers 0 --disable-validation \
            ${BF16_FLAGS[@]+"${BF16_FLAGS[@]}"}
    fi
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    echo "Stage 3: train $MT_ARCH from $PRETRAINED (ae: ${AE_STEPS:-none}; bt: ${BT_STEPS:-none};" \
         "mt: ${MT_STEPS:-none}) into $SAVE"
    [ -f "$PRETRAINED" ] || { echo "error: no pretrained checkpoint $PRETRAINED; run stage 2" >&2; exit 1; }
    init=(--pretrained-xlm-checkpoint "$PRETRAINED")
    # once training has started, the weights come from $SAVE/checkpoint_last.pt
    [ -f "$SAVE/checkpoint_last.pt" ] && init=()
    if [ "$EPOCH_SIZE" -gt 0 ]; then
        every=(--epoch-size "$EPOCH_SIZE")   # fairseq validates and saves at each epoch end
    else
        # every VALID_EVERY updates only: not also at each end of fairseq's (data) epoch, every ~200 updates
        every=(--validate-interval-updates "$VALID_EVERY" --save-interval-updates "$VALID_EVERY"
               --keep-interval-updates 1 --validate-interval 1000000 --save-interval 1000000)
    fi
    # shellcheck disable=SC2086  # EXTRA is a list of flags
    "$PYTHON" -m fairseq_cli.train "$DATABIN" "${TIMEOUT_FLAGS[@]}" --user-dir "$USER_DIR" --task unsupervised_mt \
        --langs "$LANGS" --ae-steps "$AE_STEPS" --bt-steps "$BT_STEPS" --mt-steps "$MT_STEPS" \
        --lambda-ae "$LAMBDA_AE" --lambda-bt "$LAMBDA_BT" --lambda-mt "$LAMBDA_MT" \
        --word-shuffle "$WORD_SHUFFLE" --word-dropout "$WORD_DROPOUT" --word-blank "$WORD_BLANK" \
        --bt-beam "$BT_BEAM" --arch "$MT_ARCH" ${init[@]+"${init[@]}"} \
        --criterion label_smoothed_cross_entropy --label-smoothing 0 \
        --optimizer adam --adam-betas '(0.9,0.98)' --lr "$LR" --lr-scheduler inverse_sqrt \
        --warmup-updates "$WARMUP" --clip-norm 5 --max-tokens "$MAX_TOKENS" --max-update "$MAX_UPDATE" \
        --eval-bleu "${every[@]}" --best-checkpoint-metric "$BEST" --maximize-best-checkpoint-metric \
        --patience "$PATIENCE" \
        --save-dir "$SAVE" --no-epoch-checkpoints --num-workers 0 ${BF16_FLAGS[@]+"${BF16_FLAGS[@]}"} $EXTRA
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
    echo "Stage 4: BLEU on $SPLIT with $SAVE/checkpoint_best.pt (greedy as the authors; beam $BEAM)"
    for dir in "$L1-$L2" "$L2-$L1"; do
        src=${dir%-*}
        tgt=${dir#*-}
        out=$SAVE/bleu.$SPLIT.$dir
        if [ -f "$out" ]; then
            printf '  %s (cached in %s):\n%s\n' "$dir" "$out" "$(cat "$out")"
            continue
        fi
        score=$(SPLIT="$SPLIT" BEAM="$BEAM" PYTHON="$PYTHON" USER_DIR="$USER_DIR" \
            bash "$ROOT/recipes/evaluate_mt.sh" "$DATABIN" "$SAVE/checkpoint_best.pt" "$src" "$tgt")
        echo "$score" > "$out.tmp"
        mv "$out.tmp" "$out"
        printf '  %s:\n%s\n' "$dir" "$score"
    done
fi
