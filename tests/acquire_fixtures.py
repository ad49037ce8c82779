"""Small files in the real formats of the paper's corpora, built in a test's folder under their real names.

Each builder writes the archive(s) ``get_data`` expects under ``--from DIR`` and returns the lines the
extraction must give (hand-written: what get-data-*.sh keep, cleaned as ``fairseq_xlm.acquire.textfiles``
says). The Wikipedia dump is ``fixtures/acquire/enwiki-sample.xml`` (templates, links, refs, a table,
headings, a comment, a redirect, a talk page).
"""

import bz2
import gzip
import io
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Dict, List

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# What get-data-wiki.sh keeps of the sample dump: WikiExtractor's text without empty and <doc> lines; the
# redirect and the talk page give nothing, templates are expanded ({{nowrap|...}}) or dropped (infobox, cite),
# refs, tables, files, categories and list items removed, '' '' -> "..", &amp;amp; -> &amp; (html-safe).
WIKI_EN = [
    "Anarchism",
    "Anarchism is a political philosophy and movement that is against all forms of authority. "
    "It was born in the 19th century.",
    "History.",
    "Humans lived in societies without formal hierarchies long before the establishment of states.",
    "Modern era.",
    'The word "anarchism" &amp; its relatives come from Ancient Greek.',
    "Albedo",
    'Albedo (from Latin "albedo", "whiteness") is the fraction of sunlight that is diffusely reflected by a body.',
    "It is measured on a scale from 0 to 1.",
]


def wiki_dump(folder: Path, name: str = "enwiki-latest-pages-articles.xml.bz2") -> Path:
    """The sample dump, bz2'd as the real ones."""
    path = folder / name
    path.write_bytes(bz2.compress((FIXTURES / "acquire" / "enwiki-sample.xml").read_bytes()))
    return path


def _zip(path: Path, members: Dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _tgz(path: Path, members: Dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


# An OPUS moses zip: sides line-aligned; line 3 has an empty French side (the pair is dropped), line 4 a
# carriage return and line 5 a U+2028 inside (made spaces, so every reader splits lines alike).
OPUS_EN = ["Resolution 1325 (2000)", "The Security Council,", "Recalling its resolutions,",
           "Welcomes\rthe report;", "Decides to remain seized\u2028of the matter."]
OPUS_FR = ["Résolution 1325 (2000)", "Le Conseil de sécurité,", "", "Accueille le rapport ;",
           "Décide de rester saisi de la question."]


def opus_zip(folder: Path, corpus: str = "MultiUN", pair: str = "en-fr", member: str = None) -> Path:
    """``{corpus}.{pair}.txt.zip`` as OPUS serves ``{pair}.txt.zip`` (README, LICENSE, .ids, both sides)."""
    stem = f"{member or corpus}.{pair}"
    l1, l2 = pair.split("-")
    return _zip(folder / f"{corpus}.{pair}.txt.zip", {
        "README": b"OPUS corpus\n", "LICENSE": b"see the source\n",
        f"{stem}.ids": b"".join(b"doc\tdoc\t%d\t%d\n" % (i, i) for i in range(5)),
        f"{stem}.{l1}": ("\n".join(OPUS_EN) + "\n").encode(),
        f"{stem}.{l2}": ("\n".join(OPUS_FR) + "\n").encode()})


def opus_expected() -> Dict[str, List[str]]:
    keep = [i for i in range(5) if OPUS_FR[i]]
    return {"en": [OPUS_EN[i].replace("\r", " ").replace("\u2028", " ") for i in keep],
            "fr": [OPUS_FR[i] for i in keep]}


IITB = {"en": ["The weather is fine.", "Where is the station?"], "hi": ["मौसम अच्छा है।", "स्टेशन कहाँ है?"]}


def iitb_tgz(folder: Path) -> Path:
    """IIT Bombay's parallel.tgz (parallel/IITB.en-hi.{en,hi})."""
    return _tgz(folder / "parallel.tgz", {f"parallel/IITB.en-hi.{lg}": ("\n".join(v) + "\n").encode()
                                          for lg, v in IITB.items()})


NEWS = {2007: ["First news of 2007.", "", "Second news of 2007 ."], 2008: ["A 2008 story.", "   "]}
NEWS_EN = ["First news of 2007.", "Second news of 2007 .", "A 2008 story."]


def news_crawl(folder: Path, lang: str = "en") -> None:
    """news.{2007,2008}.{lang}.shuffled.gz (an empty and a blank line among them)."""
    for year, lines in NEWS.items():
        (folder / f"news.{year}.{lang}.shuffled.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))


EUROPARL = {"en": ["Resumption of the session", "I declare resumed the session."],
            "ro": ["Reluarea sesiunii", "Declar reluată sesiunea."]}


def wmt16_en_ro(folder: Path) -> None:
    """WMT'16's training-parallel-ep-v8.tgz and OPUS's SETIMES2 en-ro zip (members named SETIMES.en-ro.*)."""
    _tgz(folder / "training-parallel-ep-v8.tgz", {
        f"training-parallel-ep-v8/europarl-v8.ro-en.{lg}": ("\n".join(v) + "\n").encode() for lg, v in EUROPARL.items()})
    opus_zip(folder, "SETIMES2", "en-ro", member="SETIMES")


def _sgm(kind: str, setid: str, lang: str, segs: List[str]) -> bytes:
    head = (f'<srcset setid="{setid}" srclang="{lang}">' if kind == "src"
            else f'<refset setid="{setid}" srclang="any" trglang="{lang}">')
    body = [head, '<doc sysid="ref" docid="1012-bbc" genre="news" origlang="en">', "<hl>",
            f'<seg id="1">{segs[0]}</seg>', "</hl>", "<p>"]
    body += [f'<seg id="{i}">{s}</seg>' for i, s in enumerate(segs[1:], start=2)]
    body += ["</p>", "</doc>", f"</{kind}set>"]
    return ("\n".join(body) + "\n").encode()


# newstest2014 en-fr with entities, runs of spaces and a segment split over two lines (as some sets have).
NT14 = {"en": ["Gas &amp; oil prices &quot;rise&quot;", "  It&#39;s   two  o&apos;clock. ", "A &lt;b&gt; tag\nsplit"],
        "fr": ["Les prix du gaz &amp; du pétrole", "Il est deux heures.", "Une balise"]}
NT14_EXPECTED = {"en": ['Gas & oil prices "rise"', "It's two o'clock.", "A <b> tag split"],
                 "fr": ["Les prix du gaz & du pétrole", "Il est deux heures.", "Une balise"]}
NT13 = {"en": ["Valid one.", "Valid two."], "fr": ["Valide un.", "Valide deux."]}


def dev_tgz(folder: Path) -> None:
    """WMT'18's dev.tgz with the en-fr sets get-data-nmt.sh names (and a source file it does not read)."""
    members = {f"dev/newstest2014-fren-ref.{lg}.sgm": _sgm("ref", "newstest2014", lg, NT14[lg]) for lg in NT14}
    members.update({f"dev/newstest2013-ref.{lg}.sgm": _sgm("ref", "newstest2013", lg, NT13[lg]) for lg in NT13})
    members["dev/newstest2014-fren-src.fr.sgm"] = _sgm("src", "newstest2014", "fr", NT14["fr"])
    _tgz(folder / "dev.tgz", members)


def xnli_zips(folder: Path) -> None:
    """XNLI-1.0.zip (with macOS resource forks, as the real one) and multinli_1.0.zip from tests/fixtures/xnli."""
    src = FIXTURES / "xnli"
    _zip(folder / "XNLI-1.0.zip", {
        "XNLI-1.0/xnli.dev.tsv": (src / "xnli.dev.tsv").read_bytes(),
        "XNLI-1.0/xnli.test.tsv": (src / "xnli.test.tsv").read_bytes(),
        "__MACOSX/XNLI-1.0/._xnli.dev.tsv": b"\x00\x05\x16\x07"})
    _zip(folder / "multinli_1.0.zip", {
        "multinli_1.0/multinli_1.0_train.jsonl": (src / "multinli_1.0_train.jsonl").read_bytes(),
        "multinli_1.0/README.txt": b"MultiNLI\n"})


def copy_xnli_raw(folder: Path) -> Path:
    """The XNLI fixtures as plain files, for prepare_xnli extract run directly."""
    shutil.copytree(FIXTURES / "xnli", folder)
    return folder


def lines(path: Path) -> List[str]:
    """A file's lines, checking it ends with a newline and splits the same with universal newlines."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), path
    text = data.decode("utf-8")
    assert text.splitlines() == text.split("\n")[:-1], f"{path}: holds characters some readers split lines at"
    return text.split("\n")[:-1]
