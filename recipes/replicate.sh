#!/usr/bin/env bash
# `make replicate`: the XLM paper's orderings at small scale, several seeds per arm, with paired comparisons.
#   recipes/replicate.sh [--stage N] [--stop-stage N] [RAW_DIR]
#   QUICK=1 recipes/replicate.sh        (smaller settings, 12 minutes on 2 idle cores)
#   SMOKE=1 recipes/replicate.sh        (tiny settings, what `make test` runs; OUT in $TMPDIR)
# RAW_DIR: a raw folder in the prepare_pretrain.sh layout ({split}.{lang}, {split}.{l1}-{l2}.{lang}; labels as
# {split}.{lang}.label for the classification claim). Default: the Bible corpus (en, es, ny; book genres).
# Claims (one row each in OUT/REPLICATION.md; a claim whose data is missing is listed as skipped, with why):
#   (a) zero-shot classification after random / CLM / MLM / MLM+TLM pretraining   (needs labels, PAIR)
#   (b) supervised MT from random / CLM / MLM init                                (needs PAIR)
#   (c) unsupervised MT (AE + BT) from random / CLM / MLM init                    (needs PAIR)
#   (d) LOW's perplexity pretrained on LOW alone, + one, + every other language   (needs LOW)
#   (e) cross-lingual retrieval P@1 after random / MLM / MLM+TLM pretraining      (needs PAIR)
# Stages (every job is skipped once its stamp OUT/runs/done/JOB exists; JOBS jobs run at once, one thread each):
#   1 data  2 pretraining (+ random-init checkpoints)  3 classification  4 supervised MT  5 unsupervised MT
#   6 perplexity (+ retrieval)  7 OUT/REPLICATION.md (+ curves-*.png)
# Every arm of a claim gets the same settings (one setting per column, no per-arm tuning) and the same
# number of updates; seeds change initialisation, batches and masks.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
source "$ROOT/recipes/lib/env.sh"
check_recipe_env "$0" "$ROOT/recipes/umt.sh" "$ROOT/recipes/evaluate_mt.sh" "$ROOT/recipes/xnli.sh"
renamed_var PRE_UPDATES PRE_MAX_UPDATE      # the names before one naming across recipes
renamed_var GENRE_UPDATES GENRE_MAX_UPDATE
renamed_var MT_UPDATES MT_MAX_UPDATE
renamed_var UMT_UPDATES UMT_MAX_UPDATE
USER_DIR=${USER_DIR:-$ROOT/fairseq_xlm}
QUICK=${QUICK:-0}
SMOKE=${SMOKE:-0}
LANGS=${LANGS:-en,es,ny}         # pretraining languages (every arm of (a)-(c) uses all of them)
PAIR=${PAIR-en-es}               # parallel pair: TLM, MT; empty: skip (b), (c) and the TLM arm
TRAIN_LANG=${TRAIN_LANG:-en}     # the classifier's only training language (zero-shot to the others)
LOW=${LOW-ny}                    # the low-resource language of (d); empty: skip (d)
D_OBJECTIVE=${D_OBJECTIVE:-clm}  # (d) compares clm (the paper's language-model perplexity) or mlm perplexity
SEEDS=${SEEDS:-1,2,3}
CLAIMS=${CLAIMS:-a,b,c,d,e}      # the claims to run (the others are reported as not selected)
if [ "$SMOKE" = 1 ]; then
    OUT=${OUT:-${TMPDIR:-/tmp}/fairseq_xlm_replicate_smoke}
    VERSES=${VERSES:-300,40,40}    # Bible: max monolingual verses per language for train,valid,test
    PARA_VERSES=${PARA_VERSES:-200,30,30}
    LOW_TRAIN=${LOW_TRAIN:-100}
    VOCAB=${VOCAB:-300}
    PRE_MAX_UPDATE=${PRE_MAX_UPDATE:-8}
    GENRE_MAX_UPDATE=${GENRE_MAX_UPDATE:-6}
    MT_MAX_UPDATE=${MT_MAX_UPDATE:-4}
    UMT_MAX_UPDATE=${UMT_MAX_UPDATE:-4}
    SEEDS=${SMOKE_SEEDS:-1,2}
    CLAIMS=${SMOKE_CLAIMS:-a,d,e}  # what `make test` runs in a minute or two; SMOKE_CLAIMS=a,b,c,d,e for all
elif [ "$QUICK" = 1 ]; then
    # about 120 fairseq processes of a few seconds' start-up each: 2 seeds and short runs keep it near 12 min (719 s idle)
    OUT=${OUT:-$ROOT/data-bin/replicate-quick}
    VERSES=${VERSES:-3000,200,200}
    PARA_VERSES=${PARA_VERSES:-3000,150,150}
    LOW_TRAIN=${LOW_TRAIN:-800}
    VOCAB=${VOCAB:-2000}
    PRE_MAX_UPDATE=${PRE_MAX_UPDATE:-600}
    GENRE_MAX_UPDATE=${GENRE_MAX_UPDATE:-400}
    MT_MAX_UPDATE=${MT_MAX_UPDATE:-240}
    UMT_MAX_UPDATE=${UMT_MAX_UPDATE:-120}
    SEEDS=${QUICK_SEEDS:-1,2}
else
    OUT=${OUT:-$ROOT/data-bin/replicate}
    VERSES=${VERSES:-0,300,300}     # train: every verse of its chapters (each language gets its own chapters)
    PARA_VERSES=${PARA_VERSES:-0,200,300}
    LOW_TRAIN=${LOW_TRAIN:-2000}    # LOW's training verses: about a quarter of the others, so that LOW alone overfits
    VOCAB=${VOCAB:-4000}
    PRE_MAX_UPDATE=${PRE_MAX_UPDATE:-2500}
    GENRE_MAX_UPDATE=${GENRE_MAX_UPDATE:-1500}
    MT_MAX_UPDATE=${MT_MAX_UPDATE:-800}
    UMT_MAX_UPDATE=${UMT_MAX_UPDATE:-500}
fi
PRE_LR=${PRE_LR:-0.004}          # the demo's pretraining settings (xlm_tiny, inverse_sqrt after 300 steps)
MT_LR=${MT_LR:-0.002}
GENRE_LR=${GENRE_LR:-0.0005}
NPROC=$(nproc 2>/dev/null || echo 1)
JOBS=${JOBS:-$(( NPROC < 4 ? NPROC : 4 ))}
DEVICE_FLAGS=${DEVICE_FLAGS:---cpu}
stage=${stage:-1}
stop_stage=${stop_stage:-7}

usage() {
    echo "usage: $0 [--stage N] [--stop-stage N] [RAW_DIR]   (env: QUICK=1 SMOKE=1 OUT LANGS PAIR LOW SEEDS ...;" \
         "see the top of the file)" >&2
    exit 2
}
source "$(dirname "${BASH_SOURCE[0]}")/lib/stages.sh"
parse_stage_args "$@"
[ "${#POSITIONAL[@]}" -le 1 ] || { echo "unexpected argument: ${POSITIONAL[1]}" >&2; usage; }
USER_RAW=${POSITIONAL[0]:-}
[ -z "$USER_RAW" ] || [ -d "$USER_RAW" ] || { echo "error: RAW_DIR $USER_RAW is not a folder" >&2; exit 1; }
for n in "$PRE_MAX_UPDATE" "$GENRE_MAX_UPDATE" "$MT_MAX_UPDATE" "$UMT_MAX_UPDATE" "$VOCAB" "$JOBS" "$LOW_TRAIN"; do
    [[ "$n" =~ ^[0-9]+$ && "$n" != 0 ]] || { echo "error: $n is not a positive integer (check the settings)" >&2; exit 2; }
done
[[ "$CLAIMS" =~ ^[a-e](,[a-e])*$ ]] || { echo "error: CLAIMS=$CLAIMS: expected letters a-e, e.g. a,d" >&2; exit 2; }
[[ "$SEEDS" =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "error: SEEDS=$SEEDS: expected e.g. 1,2,3" >&2; exit 2; }
case "$D_OBJECTIVE" in clm|mlm) ;; *) echo "error: D_OBJECTIVE=$D_OBJECTIVE: clm or mlm" >&2; exit 2 ;; esac
[ -x "$PYTHON" ] || { echo "error: $PYTHON not found: run 'make replicate' (it creates .venv) or set PYTHON" >&2; exit 1; }
IFS=, read -r -a LANG_LIST <<< "$LANGS"
IFS=, read -r -a SEED_LIST <<< "$SEEDS"
case ",$LANGS," in *",$TRAIN_LANG,"*) ;; *) echo "error: TRAIN_LANG=$TRAIN_LANG is not in LANGS=$LANGS" >&2; exit 2 ;; esac
if [ -n "$PAIR" ]; then
    for l in "${PAIR%-*}" "${PAIR#*-}"; do
        case ",$LANGS," in *",$l,"*) ;; *) echo "error: PAIR=$PAIR: $l is not in LANGS=$LANGS" >&2; exit 2 ;; esac
    done
fi
if [ -n "$LOW" ]; then
    case ",$LANGS," in *",$LOW,"*) ;; *) echo "error: LOW=$LOW is not in LANGS=$LANGS" >&2; exit 2 ;; esac
    [ "${#LANG_LIST[@]}" -ge 2 ] || { echo "error: LOW=$LOW needs another language in LANGS" >&2; exit 2; }
fi

RAW=$OUT/raw
RUNS=$OUT/runs
DONE=$RUNS/done
LOGS=$RUNS/logs
RESULTS=$OUT/results
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE

# Stamps only mean something for the settings that made them: refuse to mix.
SETTINGS="raw=${USER_RAW:-bible:$VERSES/$PARA_VERSES} langs=$LANGS pair=$PAIR low=$LOW:$LOW_TRAIN:$D_OBJECTIVE"
SETTINGS="$SETTINGS vocab=$VOCAB pre=$PRE_MAX_UPDATE@$PRE_LR genre=$GENRE_MAX_UPDATE@$GENRE_LR"
SETTINGS="$SETTINGS mt=$MT_MAX_UPDATE umt=$UMT_MAX_UPDATE@$MT_LR"
mkdir -p "$DONE" "$LOGS" "$RESULTS"
if [ -f "$RUNS/settings" ]; then
    [ "$(cat "$RUNS/settings")" = "$SETTINGS" ] || {
        echo "error: $OUT was made with other settings ($(cat "$RUNS/settings")); remove it or set OUT" >&2; exit 1; }
else
    echo "$SETTINGS" > "$RUNS/settings"
fi
echo "replicate: $SETTINGS; seeds $SEEDS; $JOBS jobs at once -> $OUT"

# ------------------------------------------------------------------------------------------ job pool
# pool JOB...: each JOB is "NAME FUNCTION ARG..." (no spaces inside arguments); at most $JOBS at once, each
# logged to LOGS/NAME.log and stamped DONE/NAME with its seconds. A failed job stops the recipe after the
# running ones end, with its log's tail.
pool() {
    local spec name fn failed=() started=()
    for spec in "$@"; do
        read -r name fn _ <<< "$spec"
        if [ -f "$DONE/$name" ]; then echo "  $name: done ($(cat "$DONE/$name") s), skipping"; continue; fi
        while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
        echo "  $name: started"
        (
            set +e
            t0=$SECONDS
            # the job in a subshell of its own, outside any `if`, so that `set -e` stops it at its first error
            # shellcheck disable=SC2086  # the job's words are its function and arguments
            ( set -e; ${spec#* } ) > "$LOGS/$name.log" 2>&1
            if [ $? -eq 0 ]; then
                echo $(( SECONDS - t0 )) > "$DONE/$name.tmp" && mv "$DONE/$name.tmp" "$DONE/$name"
                echo "  $name: done in $(( SECONDS - t0 )) s"
            else
                echo "  $name: FAILED (log: $LOGS/$name.log)"
            fi
        ) &
        started+=("$name")
    done
    wait
    for name in ${started[@]+"${started[@]}"}; do [ -f "$DONE/$name" ] || failed+=("$name"); done
    if [ "${#failed[@]}" -gt 0 ]; then
        for name in "${failed[@]}"; do echo "--- $LOGS/$name.log (last lines)" >&2; tail -n 20 "$LOGS/$name.log" >&2; done
        echo "error: ${#failed[@]} job(s) failed: ${failed[*]}" >&2
        exit 1
    fi
}

# ------------------------------------------------------------------------------------------ 1 data
low_others() { local l; for l in "${LANG_LIST[@]}"; do [ "$l" = "$LOW" ] || echo "$l"; done; }

data() {
    if [ ! -d "$RAW" ]; then
        rm -rf "$RAW.tmp"
        if [ -n "$USER_RAW" ]; then
            cp -r "$USER_RAW" "$RAW.tmp"
        else
            IFS=, read -r v_train v_valid v_test <<< "$VERSES"
            IFS=, read -r p_train p_valid p_test <<< "$PARA_VERSES"
            # Each language's monolingual text and the parallel text come from different chapters: no hidden
            # parallel data in the MLM arms (as Wikipedia), TLM adds a parallel corpus of its own.
            "$PYTHON" -m fairseq_xlm.cli.bible --out "$RAW.tmp" --langs "$LANGS" ${PAIR:+--pairs "$PAIR"} \
                --disjoint-mono --disjoint-para --labels --ids --valid-frac 0.03 --test-frac 0.03 \
                --train-verses "$v_train" --valid-verses "$v_valid" --test-verses "$v_test" \
                --para-train-verses "$p_train" --para-valid-verses "$p_valid" --para-test-verses "$p_test"
        fi
        if [ -n "$LOW" ]; then
            # every k-th line of LOW's training text (and of its label/id files): a smaller corpus that still
            # spans the whole text
            local f n
            n=$(wc -l < "$RAW.tmp/train.$LOW")
            for f in "$RAW.tmp/train.$LOW" "$RAW.tmp/train.$LOW.label" "$RAW.tmp/train.$LOW.id"; do
                [ -f "$f" ] || continue
                # line NR is kept when floor(NR * k / n) steps up: exactly k = min(LOW_TRAIN, n) evenly spread lines
                awk -v k="$LOW_TRAIN" -v n="$n" 'k >= n || int(NR * k / n) > int((NR - 1) * k / n)' "$f" > "$f.small"
                mv "$f.small" "$f"
            done
        fi
        mv "$RAW.tmp" "$RAW"
    fi
    wc -l "$RAW"/train.* | grep -v '\.label\|\.id' | sed 's/^/  /'
    "$PYTHON" -m fairseq_xlm.cli.prepare --raw "$RAW" --destdir "$OUT" --langs "$LANGS" --vocab-size "$VOCAB"
    if [ ! -f "$OUT/genre/labels.txt" ] && [ -f "$RAW/train.$TRAIN_LANG.label" ]; then
        rm -rf "$RUNS/raw-genre"
        "$PYTHON" -m fairseq_xlm.cli.replicate label-raw --raw "$RAW" --out "$RUNS/raw-genre" \
            --train-lang "$TRAIN_LANG" --langs "$LANGS"
        "$PYTHON" -m fairseq_xlm.cli.prepare_xnli binarize --raw "$RUNS/raw-genre" --data "$OUT" --subdir genre
    fi
}

# the languages other than TRAIN_LANG with labelled test text in OUT/genre, comma-separated
genre_eval_langs() {
    local l out=""
    for l in "${LANG_LIST[@]}"; do
        [ "$l" != "$TRAIN_LANG" ] && [ -f "$OUT/genre/test.$l.label" ] && out="$out${out:+,}$l"
    done
    echo "$out"
}

# plan: per claim, run or skipped (why), and its arms in the order the paper expects (worst first)
plan() {
    local a_arms="random,clm,mlm" eval_langs="" why_a="" retrieval l d_arms acc
    [ -n "$PAIR" ] && a_arms="$a_arms,mlm_tlm"
    [ -f "$OUT/genre/labels.txt" ] && eval_langs=$(genre_eval_langs)
    [ -f "$RAW/train.$TRAIN_LANG.label" ] || why_a="no labels: $RAW/train.$TRAIN_LANG.label is missing"
    [ -n "$why_a" ] || [ -n "$eval_langs" ] || why_a="no other language has labelled valid/test text"
    {
        if [ -z "$why_a" ]; then
            printf 'a\trun\t%s\tA classifier trained on %s only, tested zero-shot on %s.\n' "$a_arms" "$TRAIN_LANG" \
                "$eval_langs"
        else
            printf 'a\tskipped\t%s\t%s\n' "$a_arms" "$why_a"
        fi
        if [ -n "$PAIR" ]; then
            printf 'b\trun\trandom,clm,mlm\tMT steps on %s (both directions) from each initialisation.\n' "$PAIR"
            printf 'c\trun\trandom,clm,mlm\tDenoising + online back-translation on %s monolingual text.\n' "$PAIR"
        else
            printf 'b\tskipped\trandom,clm,mlm\tno parallel pair (PAIR is empty)\n'
            printf 'c\tskipped\trandom,clm,mlm\tno pair to translate (PAIR is empty)\n'
        fi
        if [ -n "$LOW" ]; then
            d_arms=$LOW acc=$LOW
            for l in $(low_others); do acc="$acc+$l"; d_arms="$d_arms,$acc"; done
            printf 'd\trun\t%s\t%s perplexity (%s) on held-out %s; %s has %s training sentences.\n' "$d_arms" \
                "$D_OBJECTIVE" "test.$LOW" "$LOW" "$LOW" "$(wc -l < "$RAW/train.$LOW")"
        else
            printf 'd\tskipped\t-\tno low-resource language (LOW is empty)\n'
        fi
        if [ -n "$PAIR" ]; then
            printf 'e\trun\trandom,mlm,mlm_tlm\tP@1 of nearest-neighbour search (cosine, mean-pooled last layer) between the two sides of test.%s.\n' "$PAIR"
        else
            printf 'e\tskipped\trandom,mlm,mlm_tlm\tno parallel pair (PAIR is empty)\n'
        fi
    } | awk -F'\t' -v OFS='\t' -v claims=",$CLAIMS," \
        'index(claims, "," $1 ",") == 0 {$2 = "skipped"; $4 = "not selected (CLAIMS=" substr(claims, 2, length(claims) - 2) ")"} 1' \
        > "$RESULTS/plan.tsv.tmp"
    mv "$RESULTS/plan.tsv.tmp" "$RESULTS/plan.tsv"
}

# ------------------------------------------------------------------------------------- 2 pretraining
PRETRAIN_ARGS=(--user-dir "$USER_DIR" --task xlm_pretrain --arch xlm_tiny --criterion xlm_lm --dropout 0.1
    --attention-dropout 0 --tokens-per-sample 128 --batch-size 16 --optimizer adam --adam-betas "(0.9,0.98)"
    --lr "$PRE_LR" --lr-scheduler inverse_sqrt --warmup-updates 300 --clip-norm 5 --num-workers 0 $DEVICE_FLAGS)

# pretrain ARM SEED LANGS KIND STEPS: KIND clm|mlm; STEPS the --clm-steps/--mlm-steps value. The best
# checkpoint is the best valid perplexity of LOW when the run has LOW (claim d reads it), else of all steps.
pretrain() {
    local arm=$1 seed=$2 langs=$3 kind=$4 steps=$5 dir=$RUNS/pre/$1/s$2 metric=avg_ppl every
    case ",$langs," in *",$LOW,"*) [ -n "$LOW" ] && metric=${kind}_ppl_$LOW ;; esac
    every=$(( PRE_MAX_UPDATE / 6 > 0 ? PRE_MAX_UPDATE / 6 : 1 ))
    mkdir -p "$dir"
    "$PYTHON" -m fairseq_cli.train "$OUT" "${PRETRAIN_ARGS[@]}" --langs "$langs" "--$kind-steps" "$steps" \
        --seed "$seed" --max-update "$PRE_MAX_UPDATE" --validate-interval-updates "$every" \
        --save-interval-updates "$every" --keep-interval-updates 1 --validate-interval 1000000 \
        --save-interval 1000000 --best-checkpoint-metric "$metric" --save-dir "$dir" --no-epoch-checkpoints \
        --log-format simple --log-interval 100 2>&1 | tee "$dir/train.log"
    rm -f "$dir"/checkpoint_[0-9]*_[0-9]*.pt
}

random_init() {
    "$PYTHON" -m fairseq_xlm.cli.demo random-init "$RUNS/pre/random/s$1/checkpoint_last.pt" "$OUT" \
        "${PRETRAIN_ARGS[@]}" --langs "$LANGS" --mlm-steps "$LANGS" --seed "$1"
}

# runs CLAIM: is CLAIM's plan line "run"?
runs() { [ "$(awk -F'\t' -v c="$1" '$1 == c {print $2}' "$RESULTS/plan.tsv")" = run ]; }

pretraining() {
    local specs=() s l acc
    for s in "${SEED_LIST[@]}"; do
        specs+=("pre-clm-s$s pretrain clm $s $LANGS clm $LANGS" "pre-mlm-s$s pretrain mlm $s $LANGS mlm $LANGS")
        if { runs a || runs e; } && [ -n "$PAIR" ]; then
            specs+=("pre-mlm_tlm-s$s pretrain mlm_tlm $s $LANGS mlm $LANGS,$PAIR")
        fi
        if runs d; then
            # LOW alone, then one more language at a time; the last (every language) is the clm/mlm arm above
            acc=$LOW
            specs+=("pre-$LOW-s$s pretrain $LOW $s $LOW $D_OBJECTIVE $LOW")
            for l in $(low_others | head -n $(( ${#LANG_LIST[@]} - 2 ))); do
                acc="$acc+$l"
                specs+=("pre-$acc-s$s pretrain $acc $s ${acc//+/,} $D_OBJECTIVE ${acc//+/,}")
            done
        fi
        if runs a || runs b || runs c || runs e; then specs+=("random-s$s random_init $s"); fi
    done
    pool "${specs[@]}"
}
ckpt() { echo "$RUNS/pre/$1/s$2/checkpoint_last.pt"; }

# ---------------------------------------------------------------------------------- 3 classification
genre_job() {
    local arm=$1 seed=$2 eval_langs
    eval_langs=$(genre_eval_langs)
    OMP_NUM_THREADS=1 WORK="$RUNS/genre" SUBDIR=genre RUN="$arm-s$seed" TABLE="$RUNS/genre/table.$arm.s$seed.md" \
        LANGS="$LANGS" TRAIN_LANGS="$TRAIN_LANG" ARCH=xlm_tiny LR="$GENRE_LR" BATCH=8 MAX_UPDATE="$GENRE_MAX_UPDATE" \
        EPOCH_SIZE=-1 MAX_EPOCH=0 VALIDATE_EVERY=$(( GENRE_MAX_UPDATE / 3 > 0 ? GENRE_MAX_UPDATE / 3 : 1 )) \
        DEVICE_FLAGS="$DEVICE_FLAGS" EXTRA="--seed $seed" PYTHON="$PYTHON" \
        bash "$ROOT/recipes/xnli.sh" --stage 3 "$OUT" "$(ckpt "$arm" "$seed")"
    "$PYTHON" -m fairseq_xlm.cli.replicate record --out "$RESULTS/a.$arm.s$seed.tsv" --claim a --arm "$arm" \
        --seed "$seed" genre "$RUNS/genre/table.$arm.s$seed.md" --langs "$TRAIN_LANG,$eval_langs"
}

# ------------------------------------------------------------------------------------------- 4-5 MT
# mt_job CLAIM ARM SEED: supervised (b: MT steps) or unsupervised (c: AE + BT steps) MT from the arm's
# checkpoint, then test BLEU of both directions (checkpoint_best.pt: best valid BLEU, the authors' selection)
mt_job() {
    local claim=$1 arm=$2 seed=$3 dir=$RUNS/mt-$1/$2/s$3 l1=${PAIR%-*} l2=${PAIR#*-} steps updates src tgt
    if [ "$claim" = b ]; then
        steps=(MT_STEPS="$l1-$l2,$l2-$l1" AE_STEPS= BT_STEPS=)
        updates=$MT_MAX_UPDATE
    else
        steps=(MT_STEPS= AE_STEPS="$l1,$l2" BT_STEPS="$l1-$l2-$l1,$l2-$l1-$l2" LAMBDA_AE="0:1,$(( UMT_MAX_UPDATE / 8 + 1 )):0.1")
        updates=$UMT_MAX_UPDATE
    fi
    mkdir -p "$dir"
    env "${steps[@]}" PYTHON="$PYTHON" USER_DIR="$USER_DIR" DATABIN="$OUT" SAVE="$dir" PRETRAINED="$(ckpt "$arm" "$seed")" \
        ARCH=xlm_tiny L1="$l1" L2="$l2" LANGS="$LANGS" MAX_TOKENS=1500 MAX_UPDATE="$updates" LR="$MT_LR" WARMUP=200 \
        VALID_EVERY=$(( updates / 4 > 0 ? updates / 4 : 1 )) \
        EXTRA="$DEVICE_FLAGS --dropout 0.1 --attention-dropout 0 --seed $seed --log-format simple --log-interval 50" \
        bash "$ROOT/recipes/umt.sh" --stage 3 --stop-stage 3 2>&1 | tee "$dir/train.log"
    for src in "$l1" "$l2"; do
        tgt=$l2; [ "$src" = "$l2" ] && tgt=$l1
        SPLIT=test BEAM=1 PYTHON="$PYTHON" USER_DIR="$USER_DIR" \
            bash "$ROOT/recipes/evaluate_mt.sh" "$OUT" "$dir/checkpoint_best.pt" "$src" "$tgt" > "$dir/bleu.$src-$tgt.md"
        "$PYTHON" -m fairseq_xlm.cli.replicate record --out "$RESULTS/$claim.$arm.s$seed.$src-$tgt.tsv" --claim "$claim" \
            --arm "$arm" --seed "$seed" bleu "$dir/bleu.$src-$tgt.md" --direction "$src-$tgt"
    done
    # Does the output depend on the source? The share beating a copy of the source, and the BLEU the source
    # explains (against the references minus against them shifted by one sentence): at small budgets a decoder
    # can write fluent target text that ignores the encoder, and plain BLEU cannot tell it from translation.
    # The source of one direction is the (decoded) reference of the other.
    for src in "$l1" "$l2"; do
        tgt=$l2; [ "$src" = "$l2" ] && tgt=$l1
        "$PYTHON" -m fairseq_xlm.cli.replicate record --out "$RESULTS/$claim.$arm.s$seed.copy.$src-$tgt.tsv" \
            --claim "$claim" --arm "$arm" --seed "$seed" copy "$dir/hyp.test.$src-$tgt.beam1.$tgt" \
            "$dir/ref.test.$tgt-$src.$src" "$dir/ref.test.$src-$tgt.$tgt" --direction "$src-$tgt"
    done
}

downstream() {
    local claim=$1 specs=() s arm arms
    arms=$(awk -F'\t' -v c="$claim" '$1 == c && $2 == "run" {print $3}' "$RESULTS/plan.tsv")
    [ -n "$arms" ] || { echo "  claim ($claim) skipped: $(awk -F'\t' -v c="$claim" '$1 == c {print $4}' "$RESULTS/plan.tsv")"; return 0; }
    for s in "${SEED_LIST[@]}"; do
        for arm in ${arms//,/ }; do
            if [ "$claim" = a ]; then specs+=("genre-$arm-s$s genre_job $arm $s")
            else specs+=("mt-$claim-$arm-s$s mt_job $claim $arm $s"); fi
        done
    done
    pool "${specs[@]}"
}

# ------------------------------------------------------------------------------------- 6 perplexity
ppl_job() {
    local arm=$1 seed=$2 dir=$RUNS/pre/$1/s$2 log
    [ "$arm" = "$(low_all_arm)" ] && dir=$RUNS/pre/$D_OBJECTIVE/s$seed
    log=$RUNS/ppl/$arm.s$seed.log
    mkdir -p "$RUNS/ppl"
    "$PYTHON" -m fairseq_cli.validate "$OUT" --user-dir "$USER_DIR" --task xlm_pretrain --path "$dir/checkpoint_best.pt" \
        --valid-subset test --batch-size 32 --num-workers 0 --log-format simple $DEVICE_FLAGS \
        --model-overrides "{'data': '$OUT'}" > "$log.tmp" 2>&1
    mv "$log.tmp" "$log"
    "$PYTHON" -m fairseq_xlm.cli.replicate record --out "$RESULTS/d.$arm.s$seed.tsv" --claim d --arm "$arm" \
        --seed "$seed" ppl "$log" --metric "${D_OBJECTIVE}_ppl_$LOW"
}
low_all_arm() { local acc=$LOW l; for l in $(low_others); do acc="$acc+$l"; done; echo "$acc"; }

# retrieval_job ARM SEED: claim (e), P@1 both ways on PAIR's test split with the arm's encoder (no training)
retrieval_job() {
    local arm=$1 seed=$2 out=$RUNS/retrieval/$1.s$2.json
    mkdir -p "$RUNS/retrieval"
    "$PYTHON" -m fairseq_xlm.cli.evaluate_retrieval --checkpoint "$(ckpt "$arm" "$seed")" --data "$OUT" \
        --src "${PAIR%-*}" --tgt "${PAIR#*-}" --split test --json > "$out.tmp"
    mv "$out.tmp" "$out"
    "$PYTHON" -m fairseq_xlm.cli.replicate record --out "$RESULTS/e.$arm.s$seed.tsv" --claim e --arm "$arm" \
        --seed "$seed" retrieval "$out"
}

perplexity() {
    local specs=() s arm arms
    arms=$(awk -F'\t' '$1 == "d" && $2 == "run" {print $3}' "$RESULTS/plan.tsv")
    for s in "${SEED_LIST[@]}"; do
        for arm in ${arms//,/ }; do specs+=("ppl-$arm-s$s ppl_job $arm $s"); done
    done
    if runs e; then
        for s in "${SEED_LIST[@]}"; do
            for arm in random mlm mlm_tlm; do specs+=("retrieval-$arm-s$s retrieval_job $arm $s"); done
        done
    fi
    [ "${#specs[@]}" -gt 0 ] || { echo "  claims (d) and (e) skipped"; return 0; }
    pool "${specs[@]}"
}

report() {
    local text
    text="Settings: $SETTINGS; seeds $SEEDS. Encoder xlm_tiny (2 layers, d=64); one update = one step of one kind.
Command: \`$( [ "$SMOKE" = 1 ] && echo 'SMOKE=1 ')$( [ "$QUICK" = 1 ] && echo 'QUICK=1 ')recipes/replicate.sh${USER_RAW:+ $USER_RAW}\`.
Machine: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1), $NPROC cores, $JOBS jobs at once; $(date -u +%Y-%m-%d).
Wall time per stage (s): $(for f in "$DONE"/stage-*; do [ -f "$f" ] && printf '%s %s; ' "${f##*/stage-}" "$(cat "$f")"; done)"
    "$PYTHON" -m fairseq_xlm.cli.replicate report --dir "$OUT" --settings "$text" \
        --curve "pretraining:runs/pre/*/s*/train.log:avg_ppl" \
        --curve "supervised MT:runs/mt-b/*/s*/train.log:bleu_${PAIR%-*}_${PAIR#*-}" \
        --curve "unsupervised MT:runs/mt-c/*/s*/train.log:bleu_${PAIR%-*}_${PAIR#*-}" \
        --curve "classification:runs/genre/checkpoints/*/train.log:accuracy" > /dev/null
}

# ------------------------------------------------------------------------------------------ stages
# run_stage N NAME FUNCTION [ARGS]: the stage's jobs skip themselves; the stage's wall time is kept
run_stage() {
    local n=$1 name=$2 t0
    shift 2
    { [ "$stage" -le "$n" ] && [ "$stop_stage" -ge "$n" ]; } || return 0
    echo "[replicate $n/7] $name"
    t0=$SECONDS
    "$@"
    echo $(( SECONDS - t0 + $(cat "$DONE/stage-$n" 2>/dev/null || echo 0) )) > "$DONE/stage-$n.tmp"
    mv "$DONE/stage-$n.tmp" "$DONE/stage-$n"
}
data_and_plan() { data; plan; }
run_stage 1 "data: shared BPE ($VOCAB), binarize, classification labels" data_and_plan
run_stage 2 "pretraining: $PRE_MAX_UPDATE updates per arm and seed" pretraining
run_stage 3 "(a) classification: $GENRE_MAX_UPDATE updates on $TRAIN_LANG" downstream a
run_stage 4 "(b) supervised MT: $MT_MAX_UPDATE updates" downstream b
run_stage 5 "(c) unsupervised MT: $UMT_MAX_UPDATE updates" downstream c
run_stage 6 "(d) perplexity of $LOW on its test text, (e) retrieval P@1" perplexity
run_stage 7 "report" report
if [ "$stop_stage" -ge 7 ] && [ -f "$OUT/REPLICATION.md" ]; then
    echo "(written to $OUT/REPLICATION.md)"
fi
