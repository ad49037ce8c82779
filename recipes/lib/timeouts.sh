# Sourced by the training recipes: a rank that stops answering fails the job in minutes, not after torch's
# 30-minute default (docs/failures.md). Override from the environment; 0 turns one off.
#   DIST_TIMEOUT       seconds a collective waits for the other ranks (FAIRSEQ_XLM_DIST_TIMEOUT, read by
#                      fairseq_xlm at import: the process-group timeout); default 600
#   HEARTBEAT_TIMEOUT  fairseq's --heartbeat-timeout: seconds a rank may go without a forward pass; default 600
# Sets TIMEOUT_FLAGS for the fairseq-train command line.
DIST_TIMEOUT=${DIST_TIMEOUT:-600}
HEARTBEAT_TIMEOUT=${HEARTBEAT_TIMEOUT:-600}
[[ "$DIST_TIMEOUT" =~ ^[0-9]+$ && "$HEARTBEAT_TIMEOUT" =~ ^[0-9]+$ ]] || {
    echo "DIST_TIMEOUT='$DIST_TIMEOUT' and HEARTBEAT_TIMEOUT='$HEARTBEAT_TIMEOUT' must be whole seconds (0: off)" >&2
    exit 2
}
if [ "$DIST_TIMEOUT" != 0 ]; then export FAIRSEQ_XLM_DIST_TIMEOUT=$DIST_TIMEOUT; fi
if [ "$HEARTBEAT_TIMEOUT" = 0 ]; then TIMEOUT_FLAGS=(--heartbeat-timeout -1); else
    TIMEOUT_FLAGS=(--heartbeat-timeout "$HEARTBEAT_TIMEOUT"); fi
