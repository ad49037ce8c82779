#!/usr/bin/env bash
# XLM pretraining on a data-bin made by recipes/prepare_pretrain.sh (or prepare_bible.sh).
#
#   recipes/pretrain.sh PRESET DATA_BIN SAVE_DIR [extra fairseq-train flags ...]
#
# PRESET   mlm      MLM on every language of DATA_BIN (the paper's XLM-MLM)
#          mlm_tlm  MLM on every language + TLM on every parallel pair found (XLM-MLM+TLM)
#          clm      causal LM on every language (XLM-CLM)
# SCALE    paper (default): the paper's model and length, for GPUs: ARCH=xlm_mlm_enfr_1024, MAX_UPDATE=500000,
#            BATCH_SIZE=32, TOKENS_PER_SAMPLE=256, LR=1e-4, WARMUP=4000, SAVE_EVERY=5000
#          small: what `make demo` runs, minutes on a laptop CPU: ARCH=xlm_tiny, MAX_UPDATE=5000,
#            BATCH_SIZE=32, TOKENS_PER_SAMPLE=64, MAX_PAIR_TOKENS=128, LR=0.004, WARMUP=300, SAVE_EVERY=1000
#            (add --cpu)
#          SCALE=paper on a CPU prints the model's size and a time estimate for this machine first, loudly.
# THREADS  CPU runs: OpenMP threads (default: the cores, at most 4); idle ones sleep (lib/threads.sh)
# Variables (override from the environment; each overrides its SCALE default): ARCH, LANGS (default: the
# languages in DATA_BIN, sorted; keep the order for fine-tuning), BATCH_SIZE, TOKENS_PER_SAMPLE (stream blocks),
# MAX_PAIR_TOKENS (longest TLM pair, both sides; 0 = TOKENS_PER_SAMPLE), LR, WARMUP,
# MAX_UPDATE, SAVE_EVERY (a checkpoint every N updates, so a stopped run leaves one; only the newest is
# kept besides checkpoint_best/last), LANG_ALPHA (the authors' lg_sampling_factor: min(5, n) steps drawn
# per iteration with probabilities ∝ sentences**alpha; -1 = uniform draws), PYTHON, DIST_TIMEOUT /
# HEARTBEAT_TIMEOUT (600 s, see lib/timeouts.sh), SHARDS (a DATA_BIN written by SHARDS=N prepare_pretrain.sh
# trains on DATA_BIN/shard0 .. shardN-1, one shard per epoch; default: every shard folder found; DATA_BIN may
# also be a colon-joined path dir0:dir1:..., see lib/databin.sh). One update is one step
# (one optimiser step), as the authors': WARMUP and MAX_UPDATE count steps, the --lambda-* schedules
# iterations. BF16=1: bf16 mixed precision (--autocast-bf16, CPUs with avx512_bf16/AMX and GPUs; see
# lib/bf16.sh); on GPUs --fp16 works too. Several GPUs of one machine are used automatically,
# several machines through torchrun or SLURM (see docs/pretraining.md, "Scale-out").
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/timeouts.sh"   # DIST_TIMEOUT, HEARTBEAT_TIMEOUT (600 s each)
source "$(dirname "${BASH_SOURCE[0]}")/lib/bf16.sh"

usage() {
  sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/recipes/lib/env.sh"
check_recipe_env "$0"
[ $# -ge 3 ] || usage
preset=$1 data=$2 save=$3
shift 3
case "$preset" in mlm|mlm_tlm|clm) ;; *) echo "unknown PRESET '$preset'" >&2; usage ;; esac
[[ "$data" == *:* ]] || [ -d "$data" ] || { echo "DATA_BIN '$data' is not a directory" >&2; exit 2; }
source "$ROOT/recipes/lib/databin.sh"
SHARDS=${SHARDS:-}
data_path=$(databin_path "$data" "$SHARDS") || exit 2
first=${data_path%%:*}   # languages and pairs are read from the first shard (validation's too)

PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
SCALE=${SCALE:-paper}
case "$SCALE" in
  paper) ARCH=${ARCH:-xlm_mlm_enfr_1024}; MAX_UPDATE=${MAX_UPDATE:-500000}; BATCH_SIZE=${BATCH_SIZE:-32}
         TOKENS_PER_SAMPLE=${TOKENS_PER_SAMPLE:-256}; MAX_PAIR_TOKENS=${MAX_PAIR_TOKENS:-0}; LR=${LR:-1e-4}
         WARMUP=${WARMUP:-4000}; SAVE_EVERY=${SAVE_EVERY:-5000} ;;
  small) ARCH=${ARCH:-xlm_tiny}; MAX_UPDATE=${MAX_UPDATE:-5000}; BATCH_SIZE=${BATCH_SIZE:-32}
         TOKENS_PER_SAMPLE=${TOKENS_PER_SAMPLE:-64}; MAX_PAIR_TOKENS=${MAX_PAIR_TOKENS:-128}; LR=${LR:-0.004}
         WARMUP=${WARMUP:-300}; SAVE_EVERY=${SAVE_EVERY:-1000} ;;
  *) echo "error: SCALE=$SCALE: expected paper or small" >&2; exit 2 ;;
esac
LANG_ALPHA=${LANG_ALPHA:-0.7}
BF16=${BF16:-0}
[[ "$SAVE_EVERY" =~ ^[0-9]+$ ]] || { echo "error: SAVE_EVERY=$SAVE_EVERY: expected a number of updates" >&2; exit 2; }
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

mono_langs() {
  for f in "$first"/train.*.bin; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .bin)   # train.en
    rest=${name#train.}
    case "$rest" in *.*|*-*) ;; *) echo "$rest" ;; esac
  done | sort -u
}
pairs() {
  for f in "$first"/train.*-*.*.bin; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .bin)   # train.en-es.en
    pair=${name#train.}
    echo "${pair%.*}"
  done | sort -u
}

LANGS=${LANGS:-$(mono_langs | paste -sd, -)}
[ -n "$LANGS" ] || { echo "no monolingual train.{lang}.bin in $first" >&2; exit 2; }
steps_flags=()
case "$preset" in
  mlm) steps_flags=(--mlm-steps "$LANGS") ;;
  mlm_tlm)
    pair_list=$(pairs | paste -sd, -)
    [ -n "$pair_list" ] || { echo "preset mlm_tlm: no parallel train.{l1}-{l2}.{l}.bin in $first" >&2; exit 2; }
    steps_flags=(--mlm-steps "$LANGS,$pair_list") ;;
  clm) steps_flags=(--clm-steps "$LANGS") ;;
esac

bf16_flags "$@"
cpu_threads "$@"   # lib/threads.sh: OMP_WAIT_POLICY=PASSIVE, OMP_NUM_THREADS=THREADS on a CPU
# the installed package's folder; FAIRSEQ_XLM_REGISTER=0: only the path is needed, not torch and fairseq
user_dir=$(FAIRSEQ_XLM_REGISTER=0 "$PYTHON" -m fairseq_xlm.cli.userdir)
echo "[pretrain] SCALE=$SCALE preset=$preset langs=$LANGS steps=${steps_flags[*]} arch=$ARCH" \
     "max_update=$MAX_UPDATE save_every=$SAVE_EVERY shards=$(awk -F: '{print NF}' <<< "$data_path")" \
     "${BF16_FLAGS[*]:+${BF16_FLAGS[*]} }-> $save"
echo "[pretrain] data: $data_path"
if [ "$SCALE" = paper ] && on_cpu "$@"; then
  # a forgotten SCALE=small: the paper's model on a CPU would run for months; say so before the first update
  estimate=$("$PYTHON" -m fairseq_xlm.cli.estimate --arch "$ARCH" --data "$data_path" \
      --langs "$(awk -F, '{print NF}' <<< "$LANGS")" --batch-size "$BATCH_SIZE" \
      --tokens-per-sample "$TOKENS_PER_SAMPLE" --max-update "$MAX_UPDATE" 2>/dev/null) ||
    estimate="(no time estimate: python -m fairseq_xlm.cli.estimate failed)"
  {
    echo "########################################################################################################"
    echo "warning: SCALE=paper on a CPU: $estimate."
    echo "warning: SCALE=paper is the paper's model for GPUs; on a CPU set SCALE=small (xlm_tiny, the demo's, minutes)."
    echo "########################################################################################################"
  } >&2
fi
saving=()
[ "$SAVE_EVERY" -gt 0 ] && saving=(--save-interval-updates "$SAVE_EVERY" --keep-interval-updates 1)
mkdir -p "$save"
"$PYTHON" -m fairseq_cli.train "$data_path" \
  --user-dir "$user_dir" --task xlm_pretrain --criterion xlm_lm --arch "$ARCH" \
  --langs "$LANGS" "${steps_flags[@]}" --lang-sampling-alpha "$LANG_ALPHA" \
  --tokens-per-sample "$TOKENS_PER_SAMPLE" --max-pair-tokens "$MAX_PAIR_TOKENS" --batch-size "$BATCH_SIZE" \
  --optimizer adam --adam-betas '(0.9, 0.98)' --lr "$LR" --lr-scheduler inverse_sqrt \
  --warmup-updates "$WARMUP" --clip-norm 5 --max-update "$MAX_UPDATE" \
  --save-dir "$save" --best-checkpoint-metric avg_ppl --no-epoch-checkpoints ${saving[@]+"${saving[@]}"} \
  --log-format simple --log-interval 50 "${TIMEOUT_FLAGS[@]}" ${BF16_FLAGS[@]+"${BF16_FLAGS[@]}"} "$@"
