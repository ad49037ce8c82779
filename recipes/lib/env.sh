# Sourced by the recipes, whose settings are environment variables: a misspelt or misplaced one would
# silently keep a default. Two helpers (and lib/threads.sh's cpu_threads, the recipes' threading default):
#
#   check_recipe_env RECIPE [RECIPE_IT_RUNS ...]
#       warns about every exported variable that some recipe in recipes/ reads but RECIPE (nor the recipes
#       it hands its settings to) does not, e.g. MAX_UPDATES for pretrain.sh (which reads MAX_UPDATE). A
#       recipe's variables are found in its text: the NAME of each `NAME=${NAME:-...}` (or `${NAME-...}`)
#       assignment and of each `renamed_var NAME ...` line. The recipes a checked recipe runs inherit its
#       environment, so they are not checked again (FAIRSEQ_XLM_ENV_CHECKED).
#   renamed_var OLD NEW
#       an old name keeps working: OLD's value becomes NEW's (unless NEW is set too), with a warning.

_recipe_vars() {
    {
        grep -ohE '(^|[[:space:];)])[A-Z][A-Z0-9_]*=\$\{[A-Z][A-Z0-9_]*:?-' "$@" |
            sed -nE 's/^[[:space:];)]*([A-Z0-9_]+)=\$\{\1:?-$/\1/p'
        sed -nE 's/^[[:space:]]*renamed_var[[:space:]]+([A-Z][A-Z0-9_]*).*/\1/p' "$@"
    } | sort -u
}

check_recipe_env() {
    [ -z "${FAIRSEQ_XLM_ENV_CHECKED:-}" ] || return 0
    export FAIRSEQ_XLM_ENV_CHECKED=1
    local self name file own
    self=$(basename "$1")
    own=" $(_recipe_vars "$@" "$(dirname "${BASH_SOURCE[0]}")/threads.sh" | tr '\n' ' ') "
    declare -A readers=()
    for file in "$(dirname "${BASH_SOURCE[0]}")"/../*.sh; do
        for name in $(_recipe_vars "$file"); do
            readers[$name]="${readers[$name]:+${readers[$name]}, }$(basename "$file")"
        done
    done
    for name in $(compgen -e); do
        case "$name" in OMP_*|MKL_*|CUDA_*|TMPDIR|PYTHONPATH|PYTHONUNBUFFERED) continue ;; esac
        if [ -n "${readers[$name]:-}" ] && [[ "$own" != *" $name "* ]]; then
            echo "warning: $name is set but $self does not read it (read by ${readers[$name]})" >&2
        fi
    done
}

renamed_var() {
    local old=$1 new=$2
    [ -n "${!old:-}" ] || return 0
    if [ -n "${!new:-}" ]; then
        echo "warning: $old is the old name of $new; both are set, $new=${!new} is used" >&2
    else
        echo "warning: $old is renamed $new (one name across recipes); using $new=${!old}" >&2
        printf -v "$new" '%s' "${!old}"
    fi
}

source "$(dirname "${BASH_SOURCE[0]}")/threads.sh"
