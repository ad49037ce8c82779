# Sourced by every recipe: one CPU threading default, so that a run on a shared machine stays fast.
#
# OpenMP threads that wait for work spin by default (OMP_WAIT_POLICY=ACTIVE in practice): with a single other
# busy process on the machine, a torch run's spinning threads and the other process take turns on the cores and
# the small models of SCALE=small train 10-20x slower (docs/pretraining.md, "Threads": measured). Idle threads
# that sleep (PASSIVE) lose nothing measurable on an idle machine.
#
#   cpu_threads [fairseq flags ...]
#       for a run on the CPU (--cpu among the flags, or no GPU device visible: no /dev/nvidia0 nor /dev/kfd):
#       exports OMP_WAIT_POLICY=PASSIVE and OMP_NUM_THREADS=$THREADS, unless they are set already (yours win).
#       THREADS defaults to the cores (nproc), at most 4 (more does not help these models). A GPU run's
#       environment is left as it is.
#   on_cpu [fairseq flags ...]   status 0 if the run will be on the CPU (as above)

on_cpu() {
    local flag
    for flag in "$@"; do [ "$flag" = --cpu ] && return 0; done
    [ -n "${FAIRSEQ_XLM_FAKE_GPU:-}" ] && return 1   # tests: pretend a GPU is there
    ! { [ -e /dev/nvidia0 ] || [ -e /dev/kfd ]; }
}

cpu_threads() {
    on_cpu "$@" || return 0
    local cores
    cores=$(nproc 2>/dev/null || echo 1)
    THREADS=${THREADS:-$(( cores < 4 ? cores : 4 ))}
    [[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || { echo "error: THREADS=$THREADS: expected a number of threads" >&2; exit 2; }
    export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$THREADS}
}
