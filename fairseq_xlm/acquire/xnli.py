"""XNLI-1.0 + MultiNLI (+ XNLI-MT-1.0's translate-train sets) -> ``OUT/xnli/`` through ``prepare_xnli extract``.

The archives are fetched like every other source, the members ``prepare_xnli extract`` reads are unpacked
under ``OUT/downloads/{archive}.d/``, and the extractor the caller passes (the CLI passes
``fairseq_xlm.cli.prepare_xnli.extract_nli``; the library does not import the CLI) writes the raw
classification layout (``{split}.{lang}.input0/.input1/.label``, ``labels.txt``) that its ``binarize`` reads.
"""

import json
import logging
import os
from typing import Callable, Dict, List, Optional

from fairseq_xlm.acquire import archives, sources
from fairseq_xlm.acquire.download import Fetcher

logger = logging.getLogger("fairseq_xlm.acquire")

STAMP = ".acquired.json"  # written last: the languages and sets a finished run extracted


Extract = Callable[[str, List[str], str, Optional[str], Optional[str]], Dict[str, int]]


def acquire_xnli(fetcher: Fetcher, out: str, langs: List[str], extract_nli: Extract,
                 translate_train: bool = False) -> Dict[str, int]:
    """XNLI dev/test of LANGS, MultiNLI train (en), XNLI-MT train (other LANGS, when asked) -> OUT/xnli, written
    by ``extract_nli(out, langs, xnli_dir, mnli_train, translate_train_dir)``."""
    folder = os.path.join(out, "xnli")
    stamp_path = os.path.join(folder, STAMP)
    stamp = {"langs": langs, "translate_train": translate_train}
    if os.path.isfile(stamp_path):
        with open(stamp_path, encoding="utf-8") as f:
            if json.load(f) == stamp:
                logger.info("%s: done", folder)
                return {}

    def unpacked(remote, members):
        return archives.unpack(fetcher.get(remote), members, os.path.join(fetcher.downloads, remote.name + ".d"))

    xnli = unpacked(sources.XNLI, ["xnli.dev.tsv", "xnli.test.tsv"])
    mnli = unpacked(sources.MULTINLI, ["multinli_1.0_train.jsonl"])["multinli_1.0_train.jsonl"] if "en" in langs else None
    mt_dir = None
    if translate_train:
        members = [f"multinli.train.{lg}.tsv" for lg in langs if not (lg == "en" and mnli)]
        if members:
            mt_dir = os.path.dirname(next(iter(unpacked(sources.XNLI_MT, members).values())))
    counts = extract_nli(folder, langs, os.path.dirname(xnli["xnli.dev.tsv"]), mnli, mt_dir)
    with open(stamp_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(stamp, f)
    os.replace(stamp_path + ".tmp", stamp_path)
    return counts
