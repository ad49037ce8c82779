#!/usr/bin/env bash
# The targeted runs behind docs/replication.md's "Investigation" section: one job of recipes/replicate.sh with
# one setting changed, on a finished study's folder (read only), each written to its own folder under $RUNS.
#   bench/replication/investigate.sh pre NAME KIND STEPS SEED UPDATES [FLAGS...]   pretraining (replicate.sh's pretrain)
#   bench/replication/investigate.sh mt CLAIM NAME INIT_CKPT SEED UPDATES [FLAGS...]  (b) or (c) (replicate.sh's mt_job)
#   bench/replication/investigate.sh genre TAG ARM SEED UPDATES LR [CKPT]          (a) (replicate.sh's genre_job)
# e.g. investigate.sh mt b mlm-enc-only $OUT/runs/pre/mlm/s1/checkpoint_last.pt 1 800 --pretrained-xlm-init encoder
# env: OUT (the study, default data-bin/replicate), RUNS (default data-bin/replicate-investigation), PYTHON.
# One thread per job, as the study.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/data-bin/replicate}
RUNS=${RUNS:-$ROOT/data-bin/replicate-investigation}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
[ -f "$OUT/dict.txt" ] || { echo "error: OUT=$OUT is not a finished replicate.sh study (no dict.txt)" >&2; exit 1; }
what=${1:-}; shift || true
t0=$SECONDS
case "$what" in
pre)
    [ $# -ge 5 ] || { echo "usage: $0 pre NAME KIND STEPS SEED UPDATES [FLAGS...]" >&2; exit 2; }
    name=$1 kind=$2 steps=$3 seed=$4 updates=$5; shift 5
    dir=$RUNS/pre/$name/s$seed; mkdir -p "$dir"
    # replicate.sh's PRETRAIN_ARGS and pretrain(), validating 8 times
    "$PYTHON" -m fairseq_cli.train "$OUT" --user-dir "$ROOT/fairseq_xlm" --task xlm_pretrain --arch xlm_tiny \
        --criterion xlm_lm --dropout 0.1 --attention-dropout 0 --tokens-per-sample 128 --batch-size 16 \
        --optimizer adam --adam-betas "(0.9,0.98)" --lr 0.004 --lr-scheduler inverse_sqrt --warmup-updates 300 \
        --clip-norm 5 --num-workers 0 --cpu --langs en,es,ny "--$kind-steps" "$steps" --seed "$seed" \
        --max-update "$updates" --validate-interval-updates $(( updates / 8 )) \
        --save-interval-updates $(( updates / 8 )) --keep-interval-updates 1 --validate-interval 1000000 \
        --save-interval 1000000 --best-checkpoint-metric avg_ppl --save-dir "$dir" --no-epoch-checkpoints \
        --log-format simple --log-interval 500 "$@" > "$dir/train.log" 2>&1
    rm -f "$dir"/checkpoint_[0-9]*_[0-9]*.pt ;;
mt)
    [ $# -ge 5 ] || { echo "usage: $0 mt CLAIM NAME INIT_CKPT SEED UPDATES [FLAGS...]" >&2; exit 2; }
    claim=$1 name=$2 init=$3 seed=$4 updates=$5; shift 5
    dir=$RUNS/mt-$claim/$name/s$seed; mkdir -p "$dir"
    if [ "$claim" = b ]; then steps=(MT_STEPS="en-es,es-en" AE_STEPS= BT_STEPS=)
    else steps=(MT_STEPS= AE_STEPS="en,es" BT_STEPS="en-es-en,es-en-es" LAMBDA_AE="0:1,$(( updates / 8 + 1 )):0.1"); fi
    env "${steps[@]}" PYTHON="$PYTHON" USER_DIR="$ROOT/fairseq_xlm" DATABIN="$OUT" SAVE="$dir" PRETRAINED="$init" \
        ARCH=xlm_tiny L1=en L2=es LANGS=en,es,ny MAX_TOKENS=1500 MAX_UPDATE="$updates" LR=0.002 WARMUP=200 \
        VALID_EVERY=$(( updates / 4 )) \
        EXTRA="--cpu --dropout 0.1 --attention-dropout 0 --seed $seed --log-format simple --log-interval 50 $*" \
        bash "$ROOT/recipes/umt.sh" --stage 3 --stop-stage 3 > "$dir/train.log" 2>&1
    for src in en es; do
        tgt=es; [ "$src" = es ] && tgt=en
        SPLIT=test BEAM=1 PYTHON="$PYTHON" USER_DIR="$ROOT/fairseq_xlm" \
            bash "$ROOT/recipes/evaluate_mt.sh" "$OUT" "$dir/checkpoint_best.pt" "$src" "$tgt" > "$dir/bleu.$src-$tgt.md"
    done
    "$PYTHON" "$ROOT/bench/replication/source_dependence.py" "$dir" ;;
genre)
    [ $# -ge 5 ] || { echo "usage: $0 genre TAG ARM SEED UPDATES LR [CKPT]" >&2; exit 2; }
    tag=$1 arm=$2 seed=$3 updates=$4 lr=$5
    ckpt=${6:-$OUT/runs/pre/$arm/s$seed/checkpoint_last.pt}
    work=$RUNS/genre-$tag; mkdir -p "$work"
    WORK="$work" SUBDIR=genre RUN="$arm-s$seed" TABLE="$work/table.$arm.s$seed.md" LANGS=en,es,ny TRAIN_LANGS=en \
        ARCH=xlm_tiny LR="$lr" BATCH=8 MAX_UPDATE="$updates" EPOCH_SIZE=-1 MAX_EPOCH=0 \
        VALIDATE_EVERY=$(( updates / 3 )) DEVICE_FLAGS=--cpu EXTRA="--seed $seed" PYTHON="$PYTHON" \
        bash "$ROOT/recipes/xnli.sh" --stage 3 "$OUT" "$ckpt" > "$work/$arm-s$seed.log" 2>&1
    tail -n 1 "$work/table.$arm.s$seed.md" ;;
*)
    echo "usage: $0 pre|mt|genre ...  (see the top of the file)" >&2; exit 2 ;;
esac
echo "$what $*: $(( SECONDS - t0 )) s"
