"""The paper's corpora by name -> plain text (layout: ``fairseq_xlm.acquire``), downloaded or from --from.

    python -m fairseq_xlm.cli.get_data wiki --langs en,fr,ne --out OUT          Wikipedia dumps
    python -m fairseq_xlm.cli.get_data para --pairs en-fr,en-sw --out OUT       get-data-para.sh's corpora
    python -m fairseq_xlm.cli.get_data nmt [--langs de,en,fr,ro] [--pairs en-fr,de-en,en-ro] --out OUT
    python -m fairseq_xlm.cli.get_data xnli [--langs ar,...,zh] [--translate-train] --out OUT

Every family takes ``--from DIR`` (the files already downloaded, under the names ``--list`` prints), ``--mirror
URL`` (or $FAIRSEQ_XLM_DATA_MIRROR: scheme and host of every URL replaced), ``--checksums FILE`` (sha256sum
lines that downloads must match) and ``--list`` (print ``NAME URL`` of every file it would fetch, and stop).
"""

import argparse
import logging
import os
import sys
from typing import Dict, List, Optional, Sequence

from fairseq_xlm.acquire import para, sources, wiki, wmt
from fairseq_xlm.acquire.download import MIRROR_ENV, Fetcher, Remote, read_checksums, with_mirror
from fairseq_xlm.acquire import wiki_langs as known_wikis
from fairseq_xlm.cli import setup_logging
from fairseq_xlm.errors import DataSourceError

logger = logging.getLogger("fairseq_xlm.cli.get_data")


def _codes(text: str, flag: str) -> List[str]:
    codes = [c.strip() for c in text.split(",") if c.strip()]
    if not codes:
        raise DataSourceError(f"{flag} '{text}': give one or more codes separated by commas")
    return codes


def wiki_langs(text: str, any_lang: bool) -> List[str]:
    """--langs of the wiki family, each checked against the list of Wikipedias (dbname forms accepted)."""
    langs = []
    for code in _codes(text, "--langs"):
        lang = "be-tarask" if code == "be_x_old" else code.replace("_", "-")
        if lang not in known_wikis.WIKI_LANGS and not any_lang:
            near = known_wikis.close_matches(lang)
            raise DataSourceError(f"--langs {code}: no Wikipedia has this language code"
                                  f"{' (did you mean ' + ', '.join(near) + '?)' if near else ''}; the known codes "
                                  f"are in {known_wikis.__file__} "
                                  "(--any-lang for a newer Wikipedia)")
        langs.append(lang)
    return langs


def pairs_of(text: str, known: Optional[Sequence[str]] = None):
    """--pairs -> sorted (l1, l2) tuples, each in KNOWN when given."""
    pairs = []
    for code in _codes(text, "--pairs"):
        try:
            l1, l2 = sources.sorted_pair(code)
        except ValueError as err:
            raise DataSourceError(f"--pairs {err}")
        if known is not None and f"{l1}-{l2}" not in known:
            raise DataSourceError(f"--pairs {code}: not one of {','.join(known)}")
        pairs.append((l1, l2))
    return pairs


def remotes(args) -> List[Remote]:
    """Every file a command would fetch (for --list)."""
    if args.family == "wiki":
        return [sources.wiki_dump(lg) for lg in wiki_langs(args.langs, args.any_lang)]
    if args.family == "para":
        return [r for _, _, _, r in para.plan(pairs_of(args.pairs), _corpora(args))]
    if args.family == "nmt":
        out = []
        if "newscrawl" in args.parts:
            out += [sources.news_crawl(lg, y) for lg, ys in _years(args).items() for y in ys]
        if "wmt16" in args.parts:
            out += [sources.EUROPARL_V8, sources.opus_moses("SETIMES2", "en-ro")]
        if "newstest" in args.parts:
            out.append(sources.WMT_DEV)
        return out
    langs = _codes(args.langs, "--langs")
    return ([sources.XNLI] + ([sources.MULTINLI] if "en" in langs else [])
            + ([sources.XNLI_MT] if args.translate_train else []))


def _corpora(args) -> Optional[List[str]]:
    return _codes(args.corpora, "--corpora") if args.corpora else None


def _years(args) -> Dict[str, List[int]]:
    langs = _codes(args.langs, "--langs")
    for lg in langs:
        if lg not in sources.NEWS_CRAWL_YEARS:
            raise DataSourceError(f"--langs {lg}: WMT'16 News Crawl here is {','.join(sources.NEWS_CRAWL_YEARS)}")
    if args.years:
        try:
            years = [int(y) for y in _codes(args.years, "--years")]
            for y in years:
                sources.news_crawl("en", y)
        except ValueError as err:
            raise DataSourceError(f"--years {args.years}: {err}")
        return {lg: years for lg in langs}
    return {lg: sources.NEWS_CRAWL_YEARS[lg] for lg in langs}


def run(args) -> Dict[str, int]:
    """One family's acquisition; returns {output: lines}."""
    if args.list:
        for remote in remotes(args):
            print(remote.name, with_mirror(remote.url, args.mirror or os.environ.get(MIRROR_ENV)))
        return {}
    if args.from_dir and not os.path.isdir(args.from_dir):
        raise DataSourceError(f"--from {args.from_dir}: not a folder")
    checksums = read_checksums(args.checksums) if args.checksums else None
    fetcher = Fetcher(args.out, from_dir=args.from_dir, mirror=args.mirror, checksums=checksums,
                      retries=args.retries, retry_wait=args.retry_wait)
    if args.family == "wiki":
        counts = {}
        for lang in wiki_langs(args.langs, args.any_lang):
            path = os.path.join(args.out, "wiki", f"{lang}.txt")
            if os.path.isfile(path):
                logger.info("%s: done", path)
                continue
            counts[lang] = wiki.extract_wiki(fetcher.get(sources.wiki_dump(lang)), path, args.processes,
                                             templates=not args.no_templates)
        return counts
    if args.family == "para":
        return para.acquire_para(fetcher, args.out, pairs_of(args.pairs), _corpora(args))
    if args.family == "nmt":
        counts = {}
        pairs = pairs_of(args.pairs, list(sources.NEWSTEST))
        if "newscrawl" in args.parts:
            counts.update(wmt.acquire_newscrawl(fetcher, args.out, _codes(args.langs, "--langs"), _years(args)))
        if "wmt16" in args.parts:
            counts.update(wmt.acquire_wmt16_en_ro(fetcher, args.out))
        if "newstest" in args.parts:
            counts.update(wmt.acquire_newstest(fetcher, args.out, pairs))
        return counts
    from fairseq_xlm.acquire.xnli import acquire_xnli
    from fairseq_xlm.cli.prepare_xnli import extract_nli

    return acquire_xnli(fetcher, args.out, _codes(args.langs, "--langs"), extract_nli, args.translate_train)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fairseq_xlm.cli.get_data", description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="output folder (layout: fairseq_xlm/acquire/__init__.py)")
    common.add_argument("--from", dest="from_dir", default=None,
                        help="folder of already-downloaded files (the names --list prints): nothing is downloaded")
    common.add_argument("--mirror", default=None,
                        help=f"base URL replacing every URL's scheme and host (default ${MIRROR_ENV})")
    common.add_argument("--checksums", default=None, help="sha256sum-format file: files must match it")
    common.add_argument("--retries", type=int, default=5, help="reconnections per file after a cut connection")
    common.add_argument("--retry-wait", type=float, default=5.0, help="seconds between reconnections")
    common.add_argument("--list", action="store_true", help="print NAME URL of every file to fetch, and stop")
    sub = parser.add_subparsers(dest="family", required=True)
    p = sub.add_parser("wiki", parents=[common], help="Wikipedia dumps -> OUT/wiki/{lang}.txt")
    p.add_argument("--langs", required=True, help="Wikipedia language codes, e.g. en,fr,ne,hi")
    p.add_argument("--any-lang", action="store_true", help="accept codes missing from our list of Wikipedias")
    p.add_argument("--processes", type=int, default=min(8, os.cpu_count() or 1),
                   help="WikiExtractor worker processes (the authors use 8)")
    p.add_argument("--no-templates", action="store_true",
                   help="do not expand templates (faster; the authors expand them, WikiExtractor's default)")
    p = sub.add_parser("para", parents=[common], help="parallel corpora -> OUT/para/{corpus}.{l1}-{l2}.{lang}")
    p.add_argument("--pairs", required=True, help=f"language pairs, e.g. en-fr (get-data-para.sh's: "
                                                   f"{','.join(sources.PARA_CORPORA)})")
    p.add_argument("--corpora", default=None,
                   help=f"corpora for every pair instead of get-data-para.sh's ({','.join(sources.OPUS_RELEASES)},IITB)")
    p = sub.add_parser("nmt", parents=[common], help="WMT'16 News Crawl, en-ro parallel, newstest sets")
    p.add_argument("--langs", default="de,en,fr,ro", help="News Crawl languages")
    p.add_argument("--years", default=None, help="News Crawl years for every language (default get-data-nmt.sh's)")
    p.add_argument("--pairs", default="en-fr,de-en,en-ro", help="dev/test sets of these pairs")
    p.add_argument("--parts", default="newscrawl,wmt16,newstest", help="which of newscrawl,wmt16,newstest")
    p = sub.add_parser("xnli", parents=[common], help="XNLI-1.0 + MultiNLI -> OUT/xnli (prepare_xnli extract)")
    p.add_argument("--langs", default=",".join(sources.XNLI_LANGS), help="XNLI languages (default all 15)")
    p.add_argument("--translate-train", action="store_true", help="also XNLI-MT-1.0's translated training sets")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, int]:
    """CLI entry point; returns {output: lines}; bad input exits with one line naming the file or flag."""
    args = get_parser().parse_args(argv)
    if args.family == "nmt":
        parts = set(_codes(args.parts, "--parts"))
        if not parts <= {"newscrawl", "wmt16", "newstest"}:
            raise SystemExit(f"error: --parts {args.parts}: choose among newscrawl,wmt16,newstest")
        args.parts = parts
    try:
        return run(args)
    except DataSourceError as err:
        raise SystemExit(f"error: {err}")


if __name__ == "__main__":
    setup_logging()
    main(sys.argv[1:])
