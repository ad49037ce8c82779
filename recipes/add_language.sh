#!/usr/bin/env bash
# The add-a-language study (issue 27, docs/add-language.md): pretrain en+es, add ny, compare at the same total
# updates PRE_MAX_UPDATE + CONT_MAX_UPDATE (PRE and CONT below):
#   noext   the en+es model, ny through the old BPE (add_language --vocab-size 0), CONT updates on en,es,ny
#   ext     the en+es model extended by add_language (new pieces, mean init), CONT updates on en,es,ny
#   joint   en+es+ny from the start (its own BPE, as many pieces as ext's vocabulary), PRE+CONT updates
# and measure MLM perplexity per language on the test split (pre: the en+es model before) and zero-shot genre
# accuracy (classifier trained on English, recipes/xnli.sh) on en, es, ny.
#   recipes/add_language.sh [--stage N] [--stop-stage N]
# Stages (each skipped when its stamp OUT/done/... exists):
#   1 raw Bible text (mono en, es, ny + genre labels)   2 the en+es data-bin
#   3 per seed: pretrain en+es; add_language (noext, ext); continue both; the joint data-bin and run
#   4 per seed and arm: perplexity (fairseq-validate, test split)   5 genre classification (xnli.sh)
#   6 OUT/RESULTS.md (python -m fairseq_xlm.cli.add_language_report)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
USER_DIR=${USER_DIR:-$ROOT/fairseq_xlm}
source "$ROOT/recipes/lib/env.sh"
check_recipe_env "$0" "$ROOT/recipes/xnli.sh"
OUT=${OUT:-$ROOT/data-bin/add-language}
SEEDS=${SEEDS:-1,2,3}
VERSES=${VERSES:-3000,300,300}   # mono verses per language of train,valid,test
VOCAB=${VOCAB:-1000}             # the en+es BPE
NEW_VOCAB=${NEW_VOCAB:-1000}     # the BPE learned on ny by add_language
PRE_MAX_UPDATE=${PRE_MAX_UPDATE:-1000}    # en+es pretraining updates
CONT_MAX_UPDATE=${CONT_MAX_UPDATE:-500}   # continued pretraining updates (the joint arm runs PRE+CONT)
LR=${LR:-0.004}
GENRE_MAX_UPDATE=${GENRE_MAX_UPDATE:-300}
GENRE_VERSES=${GENRE_VERSES:-2000,300,300}
stage=${stage:-1}
stop_stage=${stop_stage:-6}
usage() { echo "usage: $0 [--stage N] [--stop-stage N]  (env: OUT SEEDS VERSES PRE_MAX_UPDATE CONT_MAX_UPDATE ...)" >&2; exit 2; }
source "$ROOT/recipes/lib/stages.sh"
parse_stage_args "$@"
[ "${#POSITIONAL[@]}" -eq 0 ] || usage
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT/done"
IFS=, read -r N_TRAIN N_VALID N_TEST <<< "$VERSES"

# Stamps only mean something for the settings that made them: more seeds go into the same OUT only with the
# same settings (SEEDS is not one of them), anything else is refused.
SETTINGS="verses=$VERSES vocab=$VOCAB new_vocab=$NEW_VOCAB pre=$PRE_MAX_UPDATE cont=$CONT_MAX_UPDATE lr=$LR genre=$GENRE_MAX_UPDATE"
SETTINGS="$SETTINGS genre_verses=$GENRE_VERSES"
lock_settings "$OUT/settings" "$OUT" "$SETTINGS"

step() {  # step N NAME command...: run unless stamped, then stamp
    local n=$1 name=$2
    shift 2
    { [ "$stage" -le "$n" ] && [ "$stop_stage" -ge "$n" ]; } || return 0
    [ -f "$OUT/done/$name" ] && { echo "[$name] done, skipping"; return 0; }
    echo "[$name] $(date -u +%H:%M:%S)"
    "$@"
    touch "$OUT/done/$name"
}

PRETRAIN=(--user-dir "$USER_DIR" --task xlm_pretrain --arch xlm_tiny --criterion xlm_lm --dropout 0
    --attention-dropout 0 --tokens-per-sample 128 --batch-size 16 --optimizer adam --adam-betas "(0.9,0.98)"
    --lr "$LR" --lr-scheduler inverse_sqrt --clip-norm 5 --num-workers 0 --cpu --disable-validation
    --no-epoch-checkpoints --save-interval 1000000 --log-format simple --log-interval 100)

raw() {
    rm -rf "$OUT/raw.tmp"
    FAIRSEQ_XLM_REGISTER=0 "$PYTHON" -m fairseq_xlm.cli.bible --out "$OUT/raw.tmp" --langs en,es,ny --labels \
        --train-verses "$N_TRAIN" --valid-verses "$N_VALID" --test-verses "$N_TEST"
    rm -rf "$OUT/raw" && mv "$OUT/raw.tmp" "$OUT/raw"
}

train() {  # train DATA DIR LANGS UPDATES SEED WARMUP [more flags]: MLM on every language of LANGS
    local data=$1 dir=$2 langs=$3 updates=$4 seed=$5 warmup=$6
    shift 6
    mkdir -p "$dir"
    "$PYTHON" -m fairseq_cli.train "$data" "${PRETRAIN[@]}" --langs "$langs" --mlm-steps "$langs" \
        --max-update "$updates" --warmup-updates "$warmup" --seed "$seed" --save-dir "$dir" "$@" \
        > "$dir/train.log" 2>&1
}

continued() {  # continued ARM SEED: CONT updates from add_language's checkpoint, a fresh optimiser
    local arm=$1 s=$2 data=$OUT/s$2/$1
    train "$data" "$OUT/s$s/run-$arm" en,es,ny "$CONT_MAX_UPDATE" "$s" $(( CONT_MAX_UPDATE / 10 )) --restore-file "$data/checkpoint.pt" \
        --reset-optimizer --reset-dataloader --reset-meters --reset-lr-scheduler
}

joint_databin() {
    local vocab
    vocab=$("$PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab'] - 5)" \
        "$OUT/s${SEEDS%%,*}/ext/add_language.json")  # pieces: the extended vocabulary less specials and <mask>
    "$PYTHON" -m fairseq_xlm.cli.prepare --raw "$OUT/raw" --destdir "$OUT/joint" --langs en,es,ny \
        --vocab-size "$vocab" --sample-lines 100000 > "$OUT/joint.log" 2>&1
}

validate() {  # validate NAME DATA CKPT
    "$PYTHON" -m fairseq_cli.validate "$2" --user-dir "$USER_DIR" --task xlm_pretrain --path "$3" \
        --valid-subset test --batch-size 32 --num-workers 0 --cpu --log-format simple \
        --model-overrides "{'data': '$2'}" > "$OUT/eval/$1.log" 2>&1
}

genre() {  # genre NAME DATA CKPT
    WORK="$OUT/genre" SUBDIR=genre RUN="$1" TABLE="$OUT/genre/table.md" LANGS=en,es,ny TRAIN_LANGS=en \
        ARCH=xlm_tiny LR=0.0005 BATCH=8 MAX_UPDATE="$GENRE_MAX_UPDATE" EPOCH_SIZE=-1 MAX_EPOCH=0 \
        VALIDATE_EVERY=$(( GENRE_MAX_UPDATE / 2 )) GENRE_VERSES="$GENRE_VERSES" DEVICE_FLAGS=--cpu \
        EXTRA="--seed ${1##*-s}" PYTHON="$PYTHON" bash "$ROOT/recipes/xnli.sh" "$2" "$3" > "$OUT/genre/$1.log" 2>&1
}

step 1 raw raw
step 2 old-databin "$PYTHON" -m fairseq_xlm.cli.prepare --raw "$OUT/raw" --destdir "$OUT/old" --langs en,es \
    --vocab-size "$VOCAB" --sample-lines 100000
mkdir -p "$OUT/eval" "$OUT/genre"
for s in ${SEEDS//,/ }; do
    step 3 "pre-s$s" train "$OUT/old" "$OUT/s$s/pre" en,es "$PRE_MAX_UPDATE" "$s" $(( PRE_MAX_UPDATE / 10 ))
    for arm in noext ext; do
        vocab=0
        [ "$arm" = ext ] && vocab=$NEW_VOCAB
        step 3 "$arm-s$s-data" "$PYTHON" -m fairseq_xlm.cli.add_language "$OUT/s$s/pre/checkpoint_last.pt" \
            --data-bin "$OUT/old" --raw "$OUT/raw" --langs ny --destdir "$OUT/s$s/$arm" --vocab-size "$vocab" \
            --seed "$s" --force
        step 3 "$arm-s$s" continued "$arm" "$s"
    done
    step 3 joint-databin joint_databin
    step 3 "joint-s$s" train "$OUT/joint" "$OUT/s$s/run-joint" en,es,ny $(( PRE_MAX_UPDATE + CONT_MAX_UPDATE )) "$s" $(( PRE_MAX_UPDATE / 10 ))
done
for s in ${SEEDS//,/ }; do
    step 4 "eval-pre-s$s" validate "pre-s$s" "$OUT/old" "$OUT/s$s/pre/checkpoint_last.pt"
    for arm in noext ext; do
        step 4 "eval-$arm-s$s" validate "$arm-s$s" "$OUT/s$s/$arm" "$OUT/s$s/run-$arm/checkpoint_last.pt"
    done
    step 4 "eval-joint-s$s" validate "joint-s$s" "$OUT/joint" "$OUT/s$s/run-joint/checkpoint_last.pt"
done
for s in ${SEEDS//,/ }; do
    for arm in noext ext; do
        step 5 "genre-$arm-s$s" genre "$arm-s$s" "$OUT/s$s/$arm" "$OUT/s$s/run-$arm/checkpoint_last.pt"
    done
    step 5 "genre-joint-s$s" genre "joint-s$s" "$OUT/joint" "$OUT/s$s/run-joint/checkpoint_last.pt"
done
if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
    "$PYTHON" -m fairseq_xlm.cli.add_language_report --dir "$OUT" --seeds "$SEEDS" \
        --settings "$SETTINGS"
fi
