# Sourced by the training recipes: BF16=1 trains in bf16 mixed precision.
#
#   bf16_flags [fairseq-train flags ...]
#       sets the array BF16_FLAGS: (--autocast-bf16) for BF16=1, () for BF16=0 (anything else: an error,
#       exit 2). --autocast-bf16 (README: "bf16 mixed precision") runs the forward under bf16 autocast with
#       fp32 weights, gradients and Adam state, on CPUs and GPUs alike; fairseq's own --bf16 implies --tpu
#       and does not run on a CPU or a CUDA machine. On a CPU (--cpu among the flags, or no CUDA device seen
#       by $PYTHON's torch) without native bf16 (no avx512_bf16 or amx_bf16 in /proc/cpuinfo) bf16 is
#       emulated and far slower than fp32: one warning line on stderr, and the run goes on.
#       FAIRSEQ_XLM_CPUINFO replaces /proc/cpuinfo (tests).

bf16_flags() {
    BF16_FLAGS=()
    case "${BF16:-0}" in
        0) return 0 ;;
        1) BF16_FLAGS=(--autocast-bf16) ;;
        *) echo "error: BF16=$BF16: expected 0 (fp32) or 1 (bf16 autocast)" >&2; exit 2 ;;
    esac
    local flag on_cpu=0 cpuinfo=${FAIRSEQ_XLM_CPUINFO:-/proc/cpuinfo}
    for flag in "$@"; do [ "$flag" = --cpu ] && on_cpu=1; done
    if [ "$on_cpu" = 0 ] && ! "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
        on_cpu=1
    fi
    if [ "$on_cpu" = 1 ] && ! grep -qwE 'avx512_bf16|amx_bf16' "$cpuinfo" 2>/dev/null; then
        echo "warning: BF16=1 on a CPU without avx512_bf16/amx_bf16 ($cpuinfo): bf16 is emulated, far slower than fp32" >&2
    fi
}
