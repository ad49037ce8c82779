"""Recompute every checksum of a data-bin's manifest: ``python -m fairseq_xlm.cli.verify DATA_BIN``.

Tasks check sizes and the dictionary at load (cheap); this reads every byte, so a file corrupted in place
(same size) is found too. Checks DATA_BIN/manifest.json and the manifest of each sub-folder that has one
(``prepare_xnli``'s). Prints one line per problem and exits 1 if there is any.
"""

import argparse
import os
import sys
from typing import Optional, Sequence

from fairseq_xlm.data import manifest


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fairseq_xlm.cli.verify", description=__doc__.split("\n")[0])
    parser.add_argument("data_bin", help="a data-bin made by fairseq_xlm.prepare")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.data_bin):
        raise SystemExit(f"error: {args.data_bin}: no such folder")
    folders = [args.data_bin] + sorted(
        os.path.join(args.data_bin, d) for d in os.listdir(args.data_bin)
        if os.path.isfile(os.path.join(args.data_bin, d, manifest.NAME)))
    checked, problems = 0, []
    for folder in folders:
        n, found = manifest.verify(folder)
        checked, problems = checked + n, problems + found
    for line in problems:
        print(f"error: {line}")
    if problems:
        return 1
    print(f"ok: {checked} files of {len(folders)} manifest(s) match their sizes and sha256")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
