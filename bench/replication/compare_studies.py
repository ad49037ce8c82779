"""Two replicate studies side by side: their per-job result lines (OUT/results/*.tsv, keyed by claim, measure,
arm and seed), plan.tsv and REPLICATION.md's tables (from its first table on: the settings lines name the
command, machine, date and wall times). How the Python runner was checked against recipes/replicate.sh.

    python bench/replication/compare_studies.py OLD_OUT NEW_OUT      (exit 1 when the numbers differ)
"""

import difflib
import glob
import os
import sys


def records(out: str):
    """{(claim, measure, arm, seed): value} of every record file of a study."""
    found = {}
    for path in glob.glob(os.path.join(out, "results", "*.tsv")):
        if os.path.basename(path) == "plan.tsv":
            continue
        for line in open(path, encoding="utf-8").read().splitlines():
            claim, measure, arm, seed, value = line.split("\t")
            found[(claim, measure, arm, int(seed))] = float(value)
    return found


def tables(out: str) -> str:
    text = open(os.path.join(out, "REPLICATION.md"), encoding="utf-8").read()
    return text[text.index("Each cell"):]


def main(old: str, new: str) -> int:
    a, b = records(old), records(new)
    same = sum(a[k] == b.get(k) for k in a)
    diff = max((abs(a[k] - b[k]) for k in a if k in b), default=float("nan"))
    print(f"records: {len(a)} (old) vs {len(b)} (new); same keys: {set(a) == set(b)}; identical values: "
          f"{same}/{len(a)}; max |difference|: {diff}")
    plans = [open(os.path.join(out, "results", "plan.tsv"), encoding="utf-8").read() for out in (old, new)]
    print("plan.tsv identical:", plans[0] == plans[1])
    ta, tb = tables(old), tables(new)
    print("REPLICATION.md tables identical:", ta == tb)
    if ta != tb:
        print("".join(difflib.unified_diff(ta.splitlines(True), tb.splitlines(True), "old", "new", n=0))[:4000])
    return 0 if set(a) == set(b) and same == len(a) and ta == tb else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.split("\n\n")[1].strip())
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
