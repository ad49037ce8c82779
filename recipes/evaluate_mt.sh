#!/usr/bin/env bash
# Translate one split of a data-bin with fairseq-generate and print its sacrebleu score.
#   recipes/evaluate_mt.sh DATABIN CHECKPOINT SRC TGT
# env: SPLIT=test  BEAM=5  MAX_TOKENS=4000  LENPEN=1.0
#      REF   raw reference text, one line per sentence of SPLIT (default: the binarized reference of
#            DATABIN decoded with DATABIN/spm.model, kept in WORKDIR)
#      WORKDIR  where the decoded reference goes (default: the checkpoint's folder)
# Hypotheses are the H- lines of fairseq-generate with --post-process sentencepiece, sorted by sentence id.
# Scoring is ONE pipeline under pipefail: a crashed or partial fairseq-generate can never yield a score
# (no H- line: grep fails; a missing sentence: sacrebleu refuses streams of different lengths).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
USER_DIR=${USER_DIR:-$ROOT/fairseq_xlm}
SPLIT=${SPLIT:-test}
BEAM=${BEAM:-5}
MAX_TOKENS=${MAX_TOKENS:-4000}
LENPEN=${LENPEN:-1.0}
REF=${REF:-}

usage() {
    echo "usage: $0 DATABIN CHECKPOINT SRC TGT   (env: SPLIT BEAM REF WORKDIR MAX_TOKENS LENPEN)" >&2
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
WORKDIR=${WORKDIR:-$(dirname "$CKPT")}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [ -z "$REF" ]; then
    REF=$WORKDIR/ref.$SPLIT.$SRC-$TGT.$TGT
    if [ ! -f "$REF" ]; then
        "$PYTHON" - "$DATABIN" "$SPLIT" "$SRC" "$TGT" > "$REF.tmp" <<'PY'
import sys

import sentencepiece
from fairseq.data import data_utils
from fairseq_xlm.data import layout

data_dir, split, src, tgt = sys.argv[1:]
prefix = layout.para_prefix(data_dir, split, src, tgt, tgt)
if prefix is None:
    sys.exit(f"error: no {split}.{src}-{tgt}.{tgt} in {data_dir}: give the reference text with REF=FILE")
dictionary = layout.load_dictionary(data_dir)
spm = sentencepiece.SentencePieceProcessor(model_file=f"{data_dir}/spm.model")
for tokens in data_utils.load_indexed_dataset(prefix, dictionary):
    print(spm.decode_pieces(dictionary.string(tokens).split()))
PY
        mv "$REF.tmp" "$REF"
    fi
fi
[ -f "$REF" ] || { echo "error: REF $REF: no such file" >&2; exit 1; }

"$PYTHON" -m fairseq_cli.generate "$DATABIN" --user-dir "$USER_DIR" --task unsupervised_mt \
        --source-lang "$SRC" --target-lang "$TGT" --gen-subset "$SPLIT" --path "$CKPT" \
        --beam "$BEAM" --lenpen "$LENPEN" --max-tokens "$MAX_TOKENS" --required-batch-size-multiple 1 \
        --post-process sentencepiece --num-workers 0 \
    | grep '^H-' | sed 's/^H-//' | sort -t$'\t' -k1,1n | cut -f3 \
    | "$PYTHON" -m sacrebleu "$REF" --score-only
