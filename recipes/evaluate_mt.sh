#!/usr/bin/env bash
# Translate one split of a data-bin with fairseq-generate and print its BLEU, two flavours side by side:
#   recipes/evaluate_mt.sh DATABIN CHECKPOINT SRC TGT
# prints a markdown table | protocol | sacreBLEU (detok) | tokenized BLEU (multi-bleu.perl-style) |
#   first row: the authors' protocol, the numbers to put next to the paper's: greedy (--beam 1), at most
#     int(1.5 * source width + 8) tokens before </s> (--max-len-a 1.5 --max-len-b 8: the authors'
#     int(1.5 * len + 10) of evaluator.py counts the </s> that starts and the one that ends the output)
#   with BEAM=N > 1, a second row: beam search N (LENPEN) under the same cap
# The paper's tables report tokenized BLEU (multi-bleu.perl on Moses-tokenized text); sacreBLEU is the one
# to compare with papers that report sacreBLEU. Both: python -m fairseq_xlm.cli.bleu (a <<unk>> in the
# reference never matches).
# env: SPLIT=test  BEAM=1  LENPEN=1.0  MAX_TOKENS=4000
#      SCORE_ONLY=bleu|tok_bleu  print only that number, for the BEAM protocol alone (for scripts)
#      REF   raw reference text, one line per sentence of SPLIT (default: the binarized reference of
#            DATABIN decoded with DATABIN/spm.model, <unk> written <<unk>>, kept in WORKDIR)
#      WORKDIR  where the decoded reference and the hypotheses (hyp.SPLIT.SRC-TGT.beamN.TGT) go
#            (default: the checkpoint's folder)
# Hypotheses are the H- lines of fairseq-generate with --post-process sentencepiece, sorted by sentence id.
# Each row is ONE pipeline under pipefail: a crashed or partial fairseq-generate can never yield a score
# (no H- line: grep fails; a missing sentence: the scorer refuses streams of different lengths).
# The scorer needs neither torch nor fairseq: FAIRSEQ_XLM_REGISTER=0 spares it their import (about 6 s of CPU).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/recipes/lib/env.sh"
check_recipe_env "$0"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
USER_DIR=${USER_DIR:-$ROOT/fairseq_xlm}
SPLIT=${SPLIT:-test}
BEAM=${BEAM:-1}
MAX_TOKENS=${MAX_TOKENS:-4000}
LENPEN=${LENPEN:-1.0}
REF=${REF:-}
SCORE_ONLY=${SCORE_ONLY:-}

usage() {
    echo "usage: $0 DATABIN CHECKPOINT SRC TGT   (env: SPLIT BEAM LENPEN REF WORKDIR MAX_TOKENS SCORE_ONLY)" >&2
    exit 2
}
[ $# -eq 4 ] || usage
DATABIN=$1
CKPT=$2
SRC=$3
TGT=$4
[ -d "$DATABIN" ] || { echo "error: DATABIN $DATABIN is not a folder" >&2; exit 1; }
[ -f "$CKPT" ] || { echo "error: CHECKPOINT $CKPT: no such file" >&2; exit 1; }
[ "$SRC" != "$TGT" ] || { echo "error: SRC and TGT are both $SRC" >&2; exit 1; }
[[ "$BEAM" =~ ^[1-9][0-9]*$ ]] || { echo "error: BEAM=$BEAM: expected a beam size >= 1" >&2; exit 1; }
case "$SCORE_ONLY" in
    ""|bleu|tok_bleu) ;;
    *) echo "error: SCORE_ONLY=$SCORE_ONLY: expected bleu or tok_bleu" >&2; exit 1 ;;
esac
WORKDIR=${WORKDIR:-$(dirname "$CKPT")}
cpu_threads   # lib/threads.sh: OMP_WAIT_POLICY=PASSIVE, OMP_NUM_THREADS=THREADS when no GPU is visible
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# An encoder-only (pretraining) checkpoint cannot translate: say so once, before fairseq-generate fails.
# The same process writes the reference text, when it is not there yet (one Python start-up less).
reference=()
if [ -z "$REF" ]; then
    REF=$WORKDIR/ref.$SPLIT.$SRC-$TGT.$TGT
    [ -f "$REF" ] || reference=(--reference "$DATABIN" "$SPLIT" "$SRC" "$TGT" --out "$REF")
fi
"$PYTHON" -m fairseq_xlm.cli.mt_inputs check-checkpoint "$CKPT" ${reference[@]+"${reference[@]}"}
[ -f "$REF" ] || { echo "error: REF $REF: no such file" >&2; exit 1; }

# score_row BEAM NAME [scorer flags]: translate SPLIT, then score it, in one pipeline
score_row() {
    local beam=$1 name=$2
    shift 2
    "$PYTHON" -m fairseq_cli.generate "$DATABIN" --user-dir "$USER_DIR" --task unsupervised_mt \
            --source-lang "$SRC" --target-lang "$TGT" --gen-subset "$SPLIT" --path "$CKPT" \
            --beam "$beam" --lenpen "$LENPEN" --max-len-a 1.5 --max-len-b 8 --max-tokens "$MAX_TOKENS" \
            --required-batch-size-multiple 1 --post-process sentencepiece --num-workers 0 \
        | grep '^H-' | sed 's/^H-//' | sort -t$'\t' -k1,1n | cut -f3 \
        | tee "$WORKDIR/hyp.$SPLIT.$SRC-$TGT.beam$beam.$TGT" \
        | FAIRSEQ_XLM_REGISTER=0 "$PYTHON" -m fairseq_xlm.cli.bleu "$REF" --lang "$TGT" --name "$name" "$@"
}

if [ -n "$SCORE_ONLY" ]; then
    score_row "$BEAM" "" --score-only "$SCORE_ONLY"
    exit 0
fi
score_row 1 "greedy, max len 1.5*len+10 (authors')"
if [ "$BEAM" -gt 1 ]; then
    score_row "$BEAM" "beam $BEAM, lenpen $LENPEN, same max len" --no-header
fi
