# Sourced by the recipes that train on a data-bin made by prepare (prepare_pretrain.sh): the data path
# fairseq-train takes, for a plain or a sharded data-bin.
#
#   databin_path DATA_BIN [SHARDS]
#       prints the path to give fairseq-train, or an error (status 2):
#       - DATA_BIN holding train.* files: DATA_BIN itself;
#       - DATA_BIN written by `prepare --shards N` (SHARDS=N prepare_pretrain.sh): DATA_BIN/shard0/ ... shardN-1/;
#         the tasks train on shard (epoch - 1) % N in each epoch and validate on shard0. SHARDS empty: every
#         DATA_BIN/shard{i} folder, from 0 while they exist; SHARDS=N > 1: exactly shard0 .. shardN-1 (a
#         leftover shard of an earlier, larger prepare is then not used); SHARDS=1: DATA_BIN itself;
#       - a colon-joined path dir0:dir1:...: taken as given (each folder must hold a dict.txt).
#       The folders are joined with ':' (fairseq's sharded data path).

databin_path() {
    local data=$1 shards=${2:-} dir i dirs=()
    if [ -n "$shards" ] && ! [[ "$shards" =~ ^[1-9][0-9]*$ ]]; then
        echo "error: SHARDS=$shards: expected a number of shard folders (>= 1)" >&2
        return 2
    fi
    if [[ "$data" == *:* ]]; then
        IFS=: read -r -a dirs <<< "$data"
    elif [ "${shards:-0}" -gt 1 ]; then
        for ((i = 0; i < shards; i++)); do dirs+=("$data/shard$i"); done
    elif [ -z "$shards" ] && [ -d "$data/shard0" ]; then
        for ((i = 0; ; i++)); do
            [ -d "$data/shard$i" ] || break
            dirs+=("$data/shard$i")
        done
    else
        dirs=("$data")  # SHARDS=1 is prepare's unsharded data-bin
    fi
    for dir in "${dirs[@]}"; do
        if [ -z "$dir" ] || [ ! -f "$dir/dict.txt" ]; then
            echo "error: data-bin folder '$dir' (of $data) has no dict.txt: not a data-bin from prepare_pretrain.sh" \
                 "(SHARDS=N prepare_pretrain.sh writes shard0 .. shardN-1)" >&2
            return 2
        fi
    done
    (IFS=:; echo "${dirs[*]}")
}
