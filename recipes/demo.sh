#!/usr/bin/env bash
# `make demo`: the whole XLM pipeline on the Bible sample shipped in data/bible-sample, on CPU, with a results
# table where every number of the pretrained model stands next to a random-init model trained as long.
#   recipes/demo.sh [--stage N] [--stop-stage N]      (19.5 min on 2 idle cores of the slowest AMD EPYC seen,
#                                                     about 7 on the fastest: docs/demo.md, "Time")
#   DEMO_SMOKE=1 recipes/demo.sh                      (tiny settings, about a minute; OUT in $TMPDIR)
# Stages (each skipped when its stamp OUT/runs/done/N-NAME exists; remove OUT to start over):
#   1 unpack the sample                      2 shared sentencepiece BPE, binarize into OUT (+ genre labels)
#   3 MLM+TLM pretraining; perplexity of it and of the untrained (random-init) model
#   4 unsupervised MT (denoising + back-translation) from the pretrained and from a random-init model
#   5 translate the test set: fairseq-generate + sacrebleu (recipes/evaluate_mt.sh); MT perplexity;
#     cross-lingual retrieval P@1 of the pretrained and the untrained encoder (fairseq_xlm.cli.evaluate_retrieval)
#   6 genre classification (recipes/xnli.sh): train on English verses, test on English and Spanish (zero-shot)
#   7 OUT/RESULTS.md
# The pretrained and random-init runs of stages 4-6 run side by side (one core each), lines prefixed
# [xlm] / [random]; PARALLEL=0 runs them one after the other.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
USER_DIR=${USER_DIR:-$ROOT/fairseq_xlm}
source "$ROOT/recipes/lib/env.sh"
check_recipe_env "$0" "$ROOT/recipes/umt.sh" "$ROOT/recipes/evaluate_mt.sh" "$ROOT/recipes/xnli.sh"
renamed_var PRETRAIN_UPDATES PRETRAIN_MAX_UPDATE
renamed_var UMT_UPDATES UMT_MAX_UPDATE
renamed_var GENRE_UPDATES GENRE_MAX_UPDATE
SAMPLE=${SAMPLE:-$ROOT/data/bible-sample}
SMOKE=${DEMO_SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
    OUT=${OUT:-${TMPDIR:-/tmp}/fairseq_xlm_demo_smoke}
    SAMPLE_LINES=${SAMPLE_LINES:-300,40,40}   # lines per file of train,valid,test (0: all)
    VOCAB=${VOCAB:-300}
    PRETRAIN_MAX_UPDATE=${PRETRAIN_MAX_UPDATE:-6}
    UMT_MAX_UPDATE=${UMT_MAX_UPDATE:-4}
    GENRE_MAX_UPDATE=${GENRE_MAX_UPDATE:-6}
    BEAM=${BEAM:-2}
    LOG_INTERVAL=${LOG_INTERVAL:-2}
    VALIDATIONS=${VALIDATIONS:-4,2,3}          # per run of pretraining, UMT, genre: points of the curves
else
    OUT=${OUT:-$ROOT/data-bin/demo}
    SAMPLE_LINES=${SAMPLE_LINES:-0,0,0}
    VOCAB=${VOCAB:-3000}
    # One update is one step of one kind (the authors' schedule): pretraining takes 3 per iteration
    # (MLM en, MLM es, TLM en-es), UMT 4 (AE en, AE es, BT en-es-en, BT es-en-es).
    PRETRAIN_MAX_UPDATE=${PRETRAIN_MAX_UPDATE:-5000}   # 1667 iterations
    UMT_MAX_UPDATE=${UMT_MAX_UPDATE:-1000}             # 250 iterations (back-translation decodes on the fly)
    GENRE_MAX_UPDATE=${GENRE_MAX_UPDATE:-1000}         # batch 8 (the authors'), 25-60 updates/s per run
    BEAM=${BEAM:-5}
    LOG_INTERVAL=${LOG_INTERVAL:-100}
    VALIDATIONS=${VALIDATIONS:-10,4,10}
fi
LANGS=en,es
PAIR=en-es
PRETRAIN_LR=${PRETRAIN_LR:-0.004}
# Pretraining batches: 32 stream blocks of 64 tokens (TLM: 32 whole pairs of up to 128 tokens). The demo before
# 2026-12-06 used 16 x 128 for 12000 updates: PRETRAIN_BATCH_SIZE=16 PRETRAIN_TOKENS_PER_SAMPLE=128
# PRETRAIN_MAX_UPDATE=12000 gives it back (stronger zero-shot genre transfer, twice the pretraining time:
# docs/demo.md, "What made it shorter").
PRETRAIN_BATCH_SIZE=${PRETRAIN_BATCH_SIZE:-32}
PRETRAIN_TOKENS_PER_SAMPLE=${PRETRAIN_TOKENS_PER_SAMPLE:-64}
PRETRAIN_MAX_PAIR_TOKENS=${PRETRAIN_MAX_PAIR_TOKENS:-128}
UMT_LR=${UMT_LR:-0.002}              # inverse_sqrt after 200 warm-up updates (steps)
GENRE_LR=${GENRE_LR:-0.0005}
DEVICE_FLAGS=${DEVICE_FLAGS:---cpu}            # '' to let fairseq use a GPU
NPROC=$(nproc 2>/dev/null || echo 1)
THREADS=${THREADS:-$(( NPROC < 4 ? NPROC : 4 ))}
PARALLEL=${PARALLEL:-$(( NPROC >= 2 ? 1 : 0 ))}
JOB_THREADS=$THREADS
[ "$PARALLEL" = 1 ] && JOB_THREADS=$(( THREADS / 2 > 0 ? THREADS / 2 : 1 ))
stage=${stage:-1}
stop_stage=${stop_stage:-7}

usage() {
    echo "usage: $0 [--stage N] [--stop-stage N]" \
         "(env: DEMO_SMOKE=1 OUT PRETRAIN_MAX_UPDATE UMT_MAX_UPDATE ...; see the top of the file)" >&2
    exit 2
}
source "$(dirname "${BASH_SOURCE[0]}")/lib/stages.sh"
parse_stage_args "$@"
[ "${#POSITIONAL[@]}" -eq 0 ] || { echo "unexpected argument: ${POSITIONAL[0]}" >&2; usage; }
IFS=, read -r V_PRETRAIN V_UMT V_GENRE <<< "$VALIDATIONS"
for n in "$PRETRAIN_MAX_UPDATE" "$UMT_MAX_UPDATE" "$GENRE_MAX_UPDATE" "$VOCAB" "$BEAM" "$THREADS" "${V_PRETRAIN:-}" \
         "${V_UMT:-}" "${V_GENRE:-}" "$PRETRAIN_BATCH_SIZE" "$PRETRAIN_TOKENS_PER_SAMPLE" \
         "$PRETRAIN_MAX_PAIR_TOKENS"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "error: $n is not a positive integer (check the settings)" >&2; exit 2; }
done
[ -x "$PYTHON" ] || { echo "error: $PYTHON not found: run 'make demo' (it creates .venv) or set PYTHON" >&2; exit 1; }
[ -d "$SAMPLE" ] || { echo "error: SAMPLE $SAMPLE is not a folder" >&2; exit 1; }

RAW=$OUT/raw
RUNS=$OUT/runs
EVAL=$RUNS/eval
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1                        # fairseq's log lines appear as they happen, even through tee
# shellcheck disable=SC2086
cpu_threads $DEVICE_FLAGS   # lib/threads.sh: idle OpenMP threads sleep instead of fighting other jobs

# Stamps only mean something for the settings that made them: refuse to mix.
SETTINGS="lines=$SAMPLE_LINES vocab=$VOCAB pretrain=$PRETRAIN_MAX_UPDATE@$PRETRAIN_LR"
SETTINGS="$SETTINGS,${PRETRAIN_BATCH_SIZE}x$PRETRAIN_TOKENS_PER_SAMPLE/$PRETRAIN_MAX_PAIR_TOKENS"
SETTINGS="$SETTINGS umt=$UMT_MAX_UPDATE@$UMT_LR"
SETTINGS="$SETTINGS genre=$GENRE_MAX_UPDATE@$GENRE_LR beam=$BEAM"
mkdir -p "$RUNS/done" "$EVAL"
lock_settings "$RUNS/settings" "$OUT" "$SETTINGS"
echo "demo: sample $SAMPLE -> $OUT ($SETTINGS; $THREADS threads, side by side: $PARALLEL)"

TOTAL=7
# run_stage N NAME TITLE ESTIMATE FUNCTION: the stage line, then FUNCTION, then the stamp with its seconds.
run_stage() {
    local n=$1 name=$2 title=$3 estimate=$4 fn=$5 t0 stamp
    { [ "$stage" -le "$n" ] && [ "$stop_stage" -ge "$n" ]; } || return 0
    stamp=$RUNS/done/$n-$name
    if [ -f "$stamp" ]; then
        echo "[demo $n/$TOTAL] $title: done ($(cat "$stamp") s), skipping"
        return 0
    fi
    [ "$SMOKE" = 1 ] && estimate="smoke test: seconds"
    echo "[demo $n/$TOTAL] $title ($estimate)"
    t0=$SECONDS
    "$fn"
    echo $(( SECONDS - t0 )) > "$stamp.tmp"
    mv "$stamp.tmp" "$stamp"
}

# side_by_side FUNCTION: FUNCTION xlm and FUNCTION random, at once (PARALLEL=1), each line prefixed by its run.
side_by_side() {
    local fn=$1 run pid status=0 pids=()
    for run in xlm random; do
        if [ "$PARALLEL" = 1 ]; then
            ( "$fn" "$run" 2>&1 | prefix "$run" ) &
            pids+=("$!")
        else
            "$fn" "$run" 2>&1 | prefix "$run"
        fi
    done
    for pid in ${pids[@]+"${pids[@]}"}; do wait "$pid" || status=1; done
    return "$status"
}
prefix() { local line; while IFS= read -r line; do printf '[%s] %s\n' "$1" "$line"; done; }
# estimate UPDATES FAST SLOW: the stage line's time for UPDATES at the updates per minute of the stage on the
# fastest and the slowest 2-core machine measured, idle (docs/demo.md, "Time")
estimate() {
    local fast=$(( ($1 + $2 / 2) / $2 )) slow=$(( ($1 + $3 / 2) / $3 ))
    [ "$slow" -ge 1 ] || { echo "under a minute on 2 idle cores"; return; }
    [ "$fast" -ge 1 ] || fast=1
    local range=$slow
    [ "$fast" = "$slow" ] || range="$fast-$slow"
    echo "about $range min on 2 idle cores"
}
# every K N: the validation interval that gives K validations in N updates (at least 1): the points of the
# learning curves RESULTS.md draws (VALIDATIONS)
every() { echo $(( $2 / $1 > 0 ? $2 / $1 : 1 )); }

# ------------------------------------------------------------------------------------------ stages
unpack() {
    local f name n lines step n_train n_valid n_test
    IFS=, read -r n_train n_valid n_test <<< "$SAMPLE_LINES"
    rm -rf "$RAW.tmp" "$RAW"
    mkdir -p "$RAW.tmp"
    for f in "$SAMPLE"/*.gz; do
        name=$(basename "$f" .gz)
        case "$name" in
            train.*) n=${n_train:-0} ;; valid.*) n=${n_valid:-0} ;; test.*) n=${n_test:-0} ;; *) continue ;;
        esac
        # every k-th line, so that a slice still spans the sample's books (and genres); line-aligned files
        # (parallel sides, labels, ids) keep the same lines. awk reads to the end: no SIGPIPE under pipefail.
        lines=$(gzip -dc "$f" | wc -l)
        step=1
        [ "$n" -gt 0 ] && [ "$lines" -gt "$n" ] && step=$(( (lines + n - 1) / n ))
        gzip -dc "$f" | awk -v n="$n" -v step="$step" '(NR - 1) % step == 0 && (n == 0 || ++kept <= n)' \
            > "$RAW.tmp/$name"
    done
    mv "$RAW.tmp" "$RAW"
    echo "  $(ls "$RAW" | wc -l) files in $RAW"
}

binarize() {
    "$PYTHON" -m fairseq_xlm.cli.prepare --raw "$RAW" --destdir "$OUT" --langs "$LANGS" --vocab-size "$VOCAB"
    echo "  genre classification text (train: English verses; valid/test: the $PAIR verses, both sides)"
    rm -rf "$RUNS/genre/raw-genre" "$RUNS/genre/raw-genre.tmp"
    # text only: FAIRSEQ_XLM_REGISTER=0 spares the import of torch and fairseq (about 6 s of CPU)
    FAIRSEQ_XLM_REGISTER=0 "$PYTHON" -m fairseq_xlm.cli.demo genre-raw --sample "$RAW" \
        --out "$RUNS/genre/raw-genre.tmp" --train-lang en --pair "$PAIR"
    mv "$RUNS/genre/raw-genre.tmp" "$RUNS/genre/raw-genre"
    "$PYTHON" -m fairseq_xlm.cli.prepare_xnli binarize --raw "$RUNS/genre/raw-genre" --data "$OUT" --subdir genre
}

PRETRAIN_ARGS=(--user-dir "$USER_DIR" --task xlm_pretrain --langs "$LANGS" --mlm-steps "en,es,$PAIR"
    --arch xlm_tiny --criterion xlm_lm --dropout 0 --attention-dropout 0
    --tokens-per-sample "$PRETRAIN_TOKENS_PER_SAMPLE" --max-pair-tokens "$PRETRAIN_MAX_PAIR_TOKENS"
    --batch-size "$PRETRAIN_BATCH_SIZE" --optimizer adam --adam-betas "(0.9,0.98)" --lr "$PRETRAIN_LR"
    --lr-scheduler inverse_sqrt
    --warmup-updates 300 --clip-norm 5 --seed 1 --num-workers 0 $DEVICE_FLAGS)

# validate_ppl RUN CHECKPOINT: MLM/TLM perplexity on the test split -> EVAL/ppl.RUN.log
validate_ppl() {
    "$PYTHON" -m fairseq_cli.validate "$OUT" --user-dir "$USER_DIR" --task xlm_pretrain --path "$2" \
        --valid-subset test --batch-size 32 --num-workers 0 --log-format simple $DEVICE_FLAGS \
        --model-overrides "{'data': '$OUT'}" > "$EVAL/ppl.$1.log.tmp" 2>&1
    mv "$EVAL/ppl.$1.log.tmp" "$EVAL/ppl.$1.log"
    echo "  $1: $(grep "valid on 'test' subset" "$EVAL/ppl.$1.log" | grep -oE '(mlm|tlm)_ppl_[a-z-]+ [0-9.]+' |
        tr '\n' ' ')"
}

pretrain() {
    local dir=$RUNS/pretrain
    if [ ! -f "$dir/finished" ]; then
        mkdir -p "$dir"
        # an interrupted run resumes from $dir/checkpoint_last.pt
        OMP_NUM_THREADS=$THREADS "$PYTHON" -m fairseq_cli.train "$OUT" "${PRETRAIN_ARGS[@]}" \
            --max-update "$PRETRAIN_MAX_UPDATE" \
            --validate-interval-updates "$(every "$V_PRETRAIN" "$PRETRAIN_MAX_UPDATE")" \
            --validate-interval 1000000 --save-interval 1000000 --best-checkpoint-metric avg_ppl \
            --save-dir "$dir" --no-epoch-checkpoints --log-format simple --log-interval "$LOG_INTERVAL" \
            2>&1 | tee "$dir/train.log"
        touch "$dir/finished"
    fi
    echo "  the random-init baseline: the same model, untrained"
    [ -f "$RUNS/random/checkpoint_init.pt" ] ||
        "$PYTHON" -m fairseq_xlm.cli.demo random-init "$RUNS/random/checkpoint_init.pt" "$OUT" "${PRETRAIN_ARGS[@]}" \
            > "$RUNS/random-init.log" 2>&1
    echo "  perplexity on the test split (MLM per language, TLM on the pair)"
    validate_ppl xlm "$dir/checkpoint_last.pt"
    validate_ppl random "$RUNS/random/checkpoint_init.pt"
}

# Both runs start from a checkpoint through recipes/umt.sh (encoder and decoder initialised from it,
# cross-attention fresh): the pretrained one, or the untrained one of stage 3.
umt_run() {
    local run=$1 dir=$RUNS/umt-$1 init=$RUNS/pretrain/checkpoint_last.pt
    [ ! -f "$dir/finished" ] || { echo "$dir finished, skipping"; return 0; }
    [ "$run" = random ] && init=$RUNS/random/checkpoint_init.pt
    mkdir -p "$dir"
    OMP_NUM_THREADS=$JOB_THREADS PYTHON="$PYTHON" USER_DIR="$USER_DIR" DATABIN="$OUT" SAVE="$dir" \
        PRETRAINED="$init" ARCH=xlm_tiny L1=en L2=es AE_STEPS=en,es BT_STEPS=en-es-en,es-en-es MT_STEPS= \
        LAMBDA_AE="0:1,$(( UMT_MAX_UPDATE / 4 )):0.1" MAX_TOKENS=1500 MAX_UPDATE="$UMT_MAX_UPDATE" LR="$UMT_LR" \
        WARMUP=200 \
        VALID_EVERY="$(every "$V_UMT" "$UMT_MAX_UPDATE")" \
        EXTRA="$DEVICE_FLAGS --dropout 0 --attention-dropout 0 --seed 1 --log-format simple
               --log-interval $LOG_INTERVAL" \
        bash "$ROOT/recipes/umt.sh" --stage 3 --stop-stage 3 2>&1 | tee "$dir/train.log"
    touch "$dir/finished"
}
umt() { side_by_side umt_run; }

# retrieval_run RUN: cross-lingual retrieval P@1 of the pretraining encoder (or the untrained one) on the test
# pairs -> EVAL/retrieval.RUN.json
retrieval_run() {
    local ckpt=$RUNS/pretrain/checkpoint_last.pt out=$EVAL/retrieval.$1.json
    [ "$1" = random ] && ckpt=$RUNS/random/checkpoint_init.pt
    if [ ! -f "$out" ]; then
        OMP_NUM_THREADS=$JOB_THREADS "$PYTHON" -m fairseq_xlm.cli.evaluate_retrieval --checkpoint "$ckpt" \
            --data "$OUT" --src en --tgt es --split test --json > "$out.tmp"
        mv "$out.tmp" "$out"
    fi
    echo "retrieval P@1 (test pairs, last layer mean-pooled): $(cat "$out")"
}

evaluate_run() {
    local run=$1 ckpt=$RUNS/umt-$1/checkpoint_last.pt src tgt out
    retrieval_run "$run"
    for src in en es; do
        tgt=en; [ "$src" = en ] && tgt=es
        out=$EVAL/bleu.$run.$src-$tgt
        if [ ! -f "$out" ]; then
            OMP_NUM_THREADS=$JOB_THREADS SPLIT=test BEAM="$BEAM" SCORE_ONLY=bleu PYTHON="$PYTHON" \
                USER_DIR="$USER_DIR" \
                bash "$ROOT/recipes/evaluate_mt.sh" "$OUT" "$ckpt" "$src" "$tgt" > "$out.tmp"
            mv "$out.tmp" "$out"
        fi
        echo "BLEU $src->$tgt (test, beam $BEAM): $(cat "$out")"
        out=$EVAL/mtppl.$run.$src-$tgt.log
        if [ ! -f "$out" ]; then
            OMP_NUM_THREADS=$JOB_THREADS "$PYTHON" -m fairseq_cli.validate "$OUT" --user-dir "$USER_DIR" \
                --task unsupervised_mt --path "$ckpt" --valid-subset test --max-tokens 4000 --num-workers 0 \
                --log-format simple $DEVICE_FLAGS \
                --model-overrides "{'data': '$OUT', 'source_lang': '$src', 'target_lang': '$tgt', 'eval_bleu': False}" \
                > "$out.tmp" 2>&1
            mv "$out.tmp" "$out"
        fi
        echo "translation perplexity $src->$tgt (test):" \
             "$(grep "valid on 'test' subset" "$out" | grep -oE '\| ppl [0-9.]+' | cut -c7-)"
    done
}
evaluate() { side_by_side evaluate_run; }

genre_run() {
    local ckpt=$RUNS/pretrain/checkpoint_last.pt
    [ "$1" = random ] && ckpt=$RUNS/random/checkpoint_init.pt
    OMP_NUM_THREADS=$JOB_THREADS WORK="$RUNS/genre" SUBDIR=genre RUN="$1" TABLE="$RUNS/genre/table.$1.md" \
        LANGS="$LANGS" TRAIN_LANGS=en ARCH=xlm_tiny LR="$GENRE_LR" BATCH=8 MAX_UPDATE="$GENRE_MAX_UPDATE" \
        EPOCH_SIZE=-1 MAX_EPOCH=0 VALIDATE_EVERY="$(every "$V_GENRE" "$GENRE_MAX_UPDATE")" \
        DEVICE_FLAGS="$DEVICE_FLAGS" \
        PYTHON="$PYTHON" bash "$ROOT/recipes/xnli.sh" --stage 3 "$OUT" "$ckpt"
}
genre() { side_by_side genre_run; }

report() {
    FAIRSEQ_XLM_REGISTER=0 "$PYTHON" -m fairseq_xlm.cli.demo report --dir "$OUT" --langs "$LANGS" --train-lang en \
        --vocab "$VOCAB" --beam "$BEAM" --pretrain-updates "$PRETRAIN_MAX_UPDATE" --umt-updates "$UMT_MAX_UPDATE" \
        --genre-updates "$GENRE_MAX_UPDATE" > /dev/null
}

run_stage 1 unpack "unpack the Bible sample" "about a second" unpack
run_stage 2 binarize "shared sentencepiece BPE ($VOCAB pieces) and binarize into $OUT" "under 30 s" binarize
run_stage 3 pretrain "MLM+TLM pretraining of xlm_tiny, $PRETRAIN_MAX_UPDATE updates" \
    "$(estimate "$PRETRAIN_MAX_UPDATE" 1400 680)" pretrain
run_stage 4 umt "unsupervised MT (denoising + back-translation), $UMT_MAX_UPDATE updates, pretrained and random init" \
    "side by side, $(estimate "$UMT_MAX_UPDATE" 396 113)" umt
run_stage 5 evaluate "translate the test set (fairseq-generate + sacrebleu), its perplexity, retrieval" \
    "about 1-2 min" evaluate
run_stage 6 genre "genre classification, $GENRE_MAX_UPDATE updates on English, tested on English and Spanish" \
    "about a minute" genre
run_stage 7 report "results table" "about a second" report
if [ "$stop_stage" -ge 7 ] && [ -f "$OUT/RESULTS.md" ]; then
    echo
    cat "$OUT/RESULTS.md"
    echo "(written to $OUT/RESULTS.md)"
fi
