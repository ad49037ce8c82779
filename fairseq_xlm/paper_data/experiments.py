"""The paper's data settings (Lample & Conneau 2019), as the authors' scripts prepare them: which corpora of
part A's layout (``fairseq_xlm.acquire``) each uses, the text form, the held-out sets and the BPE."""

from dataclasses import dataclass, field
from typing import Dict, Tuple

XNLI_LANGS = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")


@dataclass(frozen=True)
class Experiment:
    """One paper setting."""

    name: str
    langs: Tuple[str, ...]
    mono: str                      # OUT/{mono}/{lang}.txt: "wiki" or "newscrawl"
    para: str = ""                 # "para" (OUT/para/{corpus}.{pair}.{lang}) or "wmt16" (OUT/wmt16/...)
    pairs: Tuple[str, ...] = ()
    # held-out sets: {} = the authors' seeded split of every corpus; else {pair: (valid set, test set)} of
    # OUT/newstest, which are then also the monolingual valid / test (get-data-nmt.sh links them)
    newstest: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    lowercase: bool = False        # lowercase_and_remove_accent.py (get-data-wiki.sh applies it to every wiki)
    codes: int = 60000             # fastBPE merges
    bpe_text: str = "mix"          # "mix": alpha-sampled monolingual sentences; "all": every training sentence
    max_mono_lines: int = 0        # 0: all; get-data-nmt.sh keeps the first N_MONO=5M lines per language
    xnli: bool = False             # also binarize OUT/xnli into DESTDIR/xnli
    note: str = ""


EXPERIMENTS: Dict[str, Experiment] = {e.name: e for e in [
    Experiment("xnli15", XNLI_LANGS, "wiki", "para", tuple(sorted("-".join(sorted(("en", l))) for l in XNLI_LANGS
                                                                 if l != "en")),
               lowercase=True, codes=95000, xnli=True,
               note="XLM-15 MLM+TLM (paper 5.1, Table 1): Wikipedia of the 15 XNLI languages, get-data-para.sh's "
                    "corpora for TLM, 95k BPE codes on the alpha=0.5 mix, lowercased, accents removed"),
    Experiment("umt-enfr", ("en", "fr"), "newscrawl", newstest={"en-fr": ("newstest2013", "newstest2014")},
               bpe_text="all", max_mono_lines=5_000_000,
               note="unsupervised en-fr (Table 2): WMT News Crawl, 5M sentences per language, 60k joint codes"),
    Experiment("umt-ende", ("de", "en"), "newscrawl", newstest={"de-en": ("newstest2013", "newstest2016")},
               bpe_text="all", max_mono_lines=5_000_000, note="unsupervised en-de (Table 2)"),
    Experiment("umt-enro", ("en", "ro"), "newscrawl", newstest={"en-ro": ("newsdev2016", "newstest2016")},
               bpe_text="all", max_mono_lines=5_000_000,
               note="unsupervised en-ro (Table 2); ro normalised and diacritics removed (WMT16 scripts)"),
    Experiment("mt-enro", ("en", "ro"), "newscrawl", "wmt16", ("en-ro",),
               newstest={"en-ro": ("newsdev2016", "newstest2016")}, bpe_text="all", max_mono_lines=5_000_000,
               note="supervised ro-en (Table 3): WMT16 en-ro parallel (europarl-v8, SETIMES2) + the en-ro "
                    "News Crawl the pretrained model and its codes come from"),
    Experiment("lowres-ne", ("en", "hi", "ne"), "wiki", lowercase=True,
               note="low-resource LM (Table 4): Wikipedia ne, hi, en; the paper gives no BPE size (60k here)"),
]}
