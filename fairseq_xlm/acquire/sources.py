"""The paper's corpora by name: the files the authors' ``get-data-*.sh`` fetch, their URLs and local names.

Local names are the names under ``OUT/downloads/`` and under ``--from DIR``: the source's own file name where
it is unique (``enwiki-latest-pages-articles.xml.bz2``, ``news.2007.en.shuffled.gz``, ``dev.tgz``), else
``{corpus}.{pair}.txt.zip`` for OPUS (whose files are all called ``{pair}.txt.zip``).
``python -m fairseq_xlm.cli.get_data FAMILY ... --list`` prints them with their URLs.
"""

from typing import Dict, List, Tuple

from fairseq_xlm.acquire.download import Remote

# ---- Wikipedia (get-data-wiki.sh) ----------------------------------------------------------------------
WIKI_DUMPS = "https://dumps.wikimedia.org"
# Wikipedias whose database name is not the language code with "-" -> "_".
_WIKI_DBNAMES = {"be-tarask": "be_x_old"}


def wiki_dbname(lang: str) -> str:
    """Language code -> the dump's database prefix (``zh-yue`` -> ``zh_yue``)."""
    return _WIKI_DBNAMES.get(lang, lang.replace("-", "_"))


def wiki_dump(lang: str) -> Remote:
    """``{lg}wiki-latest-pages-articles.xml.bz2`` (as the authors), checked against the published sha1sums."""
    db = wiki_dbname(lang)
    base = f"{WIKI_DUMPS}/{db}wiki/latest"
    return Remote(name=f"{db}wiki-latest-pages-articles.xml.bz2", url=f"{base}/{db}wiki-latest-pages-articles.xml.bz2",
                  sums_url=f"{base}/{db}wiki-latest-sha1sums.txt", sums_algo="sha1",
                  sums_entry=rf"{db}wiki-(latest|\d{{8}})-pages-articles\.xml\.bz2")


# ---- Parallel corpora (get-data-para.sh) -------------------------------------------------------------
OPUS = "https://object.pouta.csc.fi"
# corpus name (ours, as in the output file names) -> (OPUS corpus, release) of the moses-format zips.
OPUS_RELEASES = {
    "MultiUN": ("MultiUN", "v1"),
    "EUbookshop": ("EUbookshop", "v2"),
    "Europarl": ("Europarl", "v8"),
    "OpenSubtitles2018": ("OpenSubtitles", "v2018"),
    "GlobalVoices": ("GlobalVoices", "v2018q4"),
    "Tanzil": ("Tanzil", "v1"),
    "SETIMES2": ("SETIMES", "v2"),
    "Wikipedia": ("Wikipedia", "v1.0"),
    "TED2013": ("TED2013", "v1.1"),
}
# The corpora get-data-para.sh downloads per pair (its commented-out OpenSubtitles lines are left out, as it
# does; --corpora adds or replaces them).
PARA_CORPORA: Dict[str, List[str]] = {
    "ar-en": ["MultiUN"],
    "bg-en": ["EUbookshop", "Europarl"],
    "de-en": ["EUbookshop"],
    "el-en": ["EUbookshop"],
    "en-es": ["MultiUN"],
    "en-fr": ["MultiUN"],
    "en-hi": ["IITB"],
    "en-ru": ["MultiUN"],
    "en-sw": ["Tanzil", "GlobalVoices"],
    "en-th": ["OpenSubtitles2018"],
    "en-tr": ["SETIMES2", "Wikipedia", "TED2013"],
    "en-ur": ["Tanzil"],
    "en-vi": ["OpenSubtitles2018"],
    "en-zh": ["MultiUN"],
}
IITB = Remote(name="parallel.tgz", url="http://www.cfilt.iitb.ac.in/iitb_parallel/iitb_corpus_download/parallel.tgz")
IITB_MEMBERS = {"en": "IITB.en-hi.en", "hi": "IITB.en-hi.hi"}


def opus_moses(corpus: str, pair: str) -> Remote:
    """OPUS's moses-format zip of CORPUS for PAIR (l1 < l2), saved as ``{corpus}.{pair}.txt.zip``."""
    name, release = OPUS_RELEASES[corpus]
    return Remote(name=f"{corpus}.{pair}.txt.zip", url=f"{OPUS}/OPUS-{name}/{release}/moses/{pair}.txt.zip")


# ---- WMT'16 (get-data-nmt.sh) ----------------------------------------------------------------------------
# News Crawl years per language, as get-data-nmt.sh downloads them (its commented-out years via --years).
NEWS_CRAWL_YEARS = {"de": [2007, 2008], "en": [2007, 2008], "fr": [2007, 2008, 2009], "ro": [2015]}


def news_crawl(lang: str, year: int) -> Remote:
    """``news.{year}.{lang}.shuffled.gz`` at the WMT release that published it (the authors' URLs)."""
    if year <= 2013:
        name, base = f"news.{year}.{lang}.shuffled.gz", "http://www.statmt.org/wmt14/training-monolingual-news-crawl"
    elif year == 2014:
        name, base = f"news.2014.{lang}.shuffled.v2.gz", "http://www.statmt.org/wmt15/training-monolingual-news-crawl-v2"
    elif year == 2015:
        name = f"news.2015.{lang}.shuffled.gz"
        base = f"http://data.statmt.org/wmt{17 if lang == 'fr' else 16}/translation-task"
    elif year == 2016:
        name, base = f"news.2016.{lang}.shuffled.gz", "http://data.statmt.org/wmt17/translation-task"
    elif year == 2017:
        name, base = f"news.2017.{lang}.shuffled.deduped.gz", "http://data.statmt.org/wmt18/translation-task"
    else:
        raise ValueError(f"News Crawl year {year}: not one of WMT'14-18's (2007-2017)")
    return Remote(name=name, url=f"{base}/{name}")


# WMT'16 en-ro parallel training data: Europarl v8 (WMT'16's tarball) + SETIMES2 (OPUS), as the WMT'16 task.
EUROPARL_V8 = Remote(name="training-parallel-ep-v8.tgz",
                     url="http://data.statmt.org/wmt16/translation-task/training-parallel-ep-v8.tgz")
EUROPARL_V8_MEMBERS = {"en": "europarl-v8.ro-en.en", "ro": "europarl-v8.ro-en.ro"}
WMT16_EN_RO = ("europarl-v8", "SETIMES2")

# Dev/test sets: WMT'18's dev.tgz, which holds every newstest to 2017; the SGM files get-data-nmt.sh reads.
WMT_DEV = Remote(name="dev.tgz", url="http://data.statmt.org/wmt18/translation-task/dev.tgz")
NEWSTEST: Dict[str, Dict[str, Dict[str, str]]] = {
    "en-fr": {"newstest2013": {"en": "newstest2013-ref.en.sgm", "fr": "newstest2013-ref.fr.sgm"},
              "newstest2014": {"en": "newstest2014-fren-ref.en.sgm", "fr": "newstest2014-fren-ref.fr.sgm"}},
    "de-en": {"newstest2013": {"de": "newstest2013-ref.de.sgm", "en": "newstest2013-ref.en.sgm"},
              "newstest2016": {"de": "newstest2016-ende-ref.de.sgm", "en": "newstest2016-deen-ref.en.sgm"}},
    "en-ro": {"newsdev2016": {"en": "newsdev2016-roen-ref.en.sgm", "ro": "newsdev2016-enro-ref.ro.sgm"},
              "newstest2016": {"en": "newstest2016-roen-ref.en.sgm", "ro": "newstest2016-enro-ref.ro.sgm"}},
}

# ---- XNLI (get-data-xnli.sh) + MultiNLI -------------------------------------------------------------
XNLI = Remote(name="XNLI-1.0.zip", url="https://dl.fbaipublicfiles.com/XNLI/XNLI-1.0.zip")
XNLI_MT = Remote(name="XNLI-MT-1.0.zip", url="https://dl.fbaipublicfiles.com/XNLI/XNLI-MT-1.0.zip")
MULTINLI = Remote(name="multinli_1.0.zip", url="https://cims.nyu.edu/~sbowman/multinli/multinli_1.0.zip")
XNLI_LANGS = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")


def sorted_pair(pair: str) -> Tuple[str, str]:
    """``fr-en`` -> (``en``, ``fr``): our outputs name pairs with l1 < l2, as the authors and OPUS do."""
    parts = pair.split("-")
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise ValueError(f"'{pair}': a pair is two different language codes joined by '-', e.g. en-fr")
    l1, l2 = sorted(parts)
    return l1, l2
