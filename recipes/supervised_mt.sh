#!/usr/bin/env bash
# Supervised MT from an XLM initialisation (Lample & Conneau 2019, section 5.3): the flow of
# recipes/umt.sh with MT steps on the parallel data of both directions, and optionally online
# back-translation on top (the paper's "+ BT" rows):
#   recipes/supervised_mt.sh [--stage N] [--stop-stage N]
#   BT=1 recipes/supervised_mt.sh      # MT steps + back-translation steps
# Every variable of recipes/umt.sh applies (L1, L2, DATABIN, ARCH, PRETRAINED, MAX_UPDATE, BF16, ...).
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
exec bash "$ROOT/recipes/umt.sh" "$@"
