"""Recompute every checksum of a data-bin's manifest: ``python -m fairseq_xlm.cli.verify DATA_BIN``.

Tasks check sizes and the dictionary at load (cheap); this reads every byte, so a file corrupted in place
(same size) is found too. Checks DATA_BIN/manifest.json and the manifest of each sub-folder that has one
(``prepare_xnli``'s). Prints one line per problem and exits 1 if there is any.

``--write-manifest`` is for a data-bin made without ``fairseq_xlm.cli.prepare`` (plain ``fairseq-preprocess``):
without a manifest every task reads each split's index and tokens once at load, in every process (at
hundreds of millions of sentences that is the start-up: 22 s and 4 GiB of page cache at 257 M, see docs/benchmarks.md
"Scale-out"). This checks every split once the same way (index structure, token ids against dict.txt) and
then records sizes and checksums in ``manifest.json``, so later loads read headers only.
"""

import argparse
import os
import sys
from typing import Optional, Sequence

from fairseq_xlm.data import layout, manifest
from fairseq_xlm.errors import DataBinError


def write_manifest(folder: str) -> str:
    """Check every split of ``folder`` as a load without a manifest does, then write its manifest."""
    dictionary = os.path.join(folder, "dict.txt")
    if not os.path.isfile(dictionary):
        raise DataBinError(f"{dictionary}: missing (every data-bin folder holds the dictionary it was made with)")
    vocab = len(layout.load_dictionary(folder))
    prefixes = sorted(name[: -len(".bin")] for name in os.listdir(folder) if name.endswith(".bin"))
    for prefix in prefixes:
        manifest.check_split(os.path.join(folder, prefix), dictionary, vocab)
    langs, pairs = set(), set()
    for split in {prefix.split(".")[0] for prefix in prefixes}:
        mono, para = layout.available(folder, split)
        langs.update(mono)
        pairs.update(para)
    return manifest.write(folder, dictionary, sorted(langs), sorted(pairs))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fairseq_xlm.cli.verify", description=__doc__.split("\n")[0])
    parser.add_argument("data_bin", help="a data-bin made by fairseq_xlm.prepare")
    parser.add_argument("--write-manifest", action="store_true",
                        help="a data-bin without manifest.json (plain fairseq-preprocess): check every split once "
                             "and write one, so that loads read index headers only")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.data_bin):
        raise SystemExit(f"error: {args.data_bin}: no such folder")
    if args.write_manifest:
        if manifest.load(args.data_bin) is not None:
            raise SystemExit(f"error: {os.path.join(args.data_bin, manifest.NAME)}: exists already; "
                             f"run without --write-manifest to verify it")
        try:
            path = write_manifest(args.data_bin)
        except DataBinError as err:
            raise SystemExit(f"error: {err}") from None
        print(f"ok: wrote {path}")
        return 0
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
