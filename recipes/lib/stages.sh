# Sourced by the recipes: espresso-style `[--stage N] [--stop-stage N]` options.
# parse_stage_args "$@" sets $stage and $stop_stage (the caller sets their defaults first), puts the other
# arguments in the array POSITIONAL, and calls the caller's `usage` (which exits 2) on a malformed command line.
parse_stage_args() {
    POSITIONAL=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --stage) [ $# -ge 2 ] || usage; stage=$2; shift 2 ;;
            --stop-stage) [ $# -ge 2 ] || usage; stop_stage=$2; shift 2 ;;
            -h|--help) usage ;;
            -*) echo "unknown option: $1" >&2; usage ;;
            *) POSITIONAL+=("$1"); shift ;;
        esac
    done
    [[ "$stage" =~ ^[0-9]+$ && "$stop_stage" =~ ^[0-9]+$ ]] || usage
}

# lock_settings FILE FOLDER SETTINGS: stamps only mean something for the settings that made them. The first run
# writes SETTINGS to FILE; a later run with other settings is refused (exit 1) naming FOLDER.
lock_settings() {
    local file=$1 folder=$2 settings=$3
    if [ -f "$file" ]; then
        if [ "$(cat "$file")" != "$settings" ]; then
            echo "error: $folder was made with other settings ($(cat "$file")), not ($settings); remove it or set OUT" >&2
            exit 1
        fi
    else
        echo "$settings" > "$file"
    fi
}
