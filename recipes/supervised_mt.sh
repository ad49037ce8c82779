#!/usr/bin/env bash
# Supervised MT from an XLM initialisation (Lample & Conneau 2019, section 5.3): MT steps on the parallel training
# data of both directions (BT=1 adds online back-translation steps: the paper's "+ BT" rows), then BLEU.
#   recipes/supervised_mt.sh [--stage N] [--stop-stage N]
# Stages (recipes/umt.sh's): 1 the Bible data-bin (only when DATABIN is the Bible's and missing), 2 MLM pretraining
# (skipped when PRETRAINED is given), 3 train xlm_mt_* from PRETRAINED, 4 BLEU of both directions on SPLIT.
# After `make demo` (its data-bin, pretrained and untrained checkpoints), about 5 minutes on 2 CPU cores each:
#   DATABIN=data-bin/demo PRETRAINED=data-bin/demo/runs/pretrain/checkpoint_last.pt SAVE=checkpoints/demo/smt \
#       bash recipes/supervised_mt.sh
#   DATABIN=data-bin/demo PRETRAINED=data-bin/demo/runs/random/checkpoint_init.pt SAVE=checkpoints/demo/smt-random \
#       bash recipes/supervised_mt.sh                     # the same from random init
# Your corpus: DATABIN from recipes/prepare_pretrain.sh with parallel train/valid/test.L1-L2.{L1,L2} files, and
# PRETRAINED from recipes/pretrain.sh on it; set L1 and L2 (the checkpoint's languages are LANGS, in its order).
# Variables (environment), defaults for xlm_tiny on a CPU (minutes): L1=en L2=es, DATABIN=data-bin/$NAME
# (NAME=bible), SAVE=checkpoints/$NAME/$EXP (EXP=supervised or supervised_bt), PRETRAINED, ARCH=xlm_tiny (the
# checkpoint's), LR=0.002, WARMUP=200, MAX_UPDATE=2000, MAX_TOKENS=2000, VALID_EVERY=500, BEAM=5, BT=0, and every
# other variable of recipes/umt.sh. The paper's (GPUs): ARCH=xlm_mlm_enfr_1024 or a converted release as
# PRETRAINED, LR=1e-4, WARMUP=4000, MAX_TOKENS=2000, for days.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/recipes/lib/env.sh"
check_recipe_env "$0" "$ROOT/recipes/umt.sh" "$ROOT/recipes/prepare_bible.sh" "$ROOT/recipes/evaluate_mt.sh"
L1=${L1:-en}
L2=${L2:-es}
BT=${BT:-0}

case "$BT" in
    0) bt_steps=""; exp=supervised ;;
    1) bt_steps="$L1-$L2-$L1,$L2-$L1-$L2"; exp=supervised_bt ;;
    *) echo "usage: BT=0|1 $0 [--stage N] [--stop-stage N]" >&2; exit 2 ;;
esac

export L1 L2
export EXP=${EXP:-$exp}
export MT_STEPS=${MT_STEPS:-$L1-$L2,$L2-$L1}
export BT_STEPS=${BT_STEPS-$bt_steps}
export AE_STEPS=${AE_STEPS-}
export LR=${LR:-0.002}               # xlm_tiny's (umt.sh's 1e-4 is the paper's, for its 1024-dim model)
export WARMUP=${WARMUP:-200}
export MAX_UPDATE=${MAX_UPDATE:-2000}
exec bash "$ROOT/recipes/umt.sh" "$@"
