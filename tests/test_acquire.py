"""get_data's families on small files of every real format, through --from to the output layout.

Each expected text is hand-written (tests/acquire_fixtures.py) or, for XNLI, what ``prepare_xnli extract``
gives on the same files unpacked. The HTTP side (resume, checksums) is tests/test_acquire_download.py.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import acquire_fixtures as fx
from fairseq_xlm.cli import get_data

REPO = Path(__file__).resolve().parents[1]


def run(family, out, src, *args):
    return get_data.main([family, "--out", str(out), "--from", str(src), *map(str, args)])


def refused(family, out, src, *args) -> str:
    """The one-line error of a refused command."""
    with pytest.raises(SystemExit) as exc:
        run(family, out, src, *args)
    message = str(exc.value)
    assert message.startswith("error: ") and "\n" not in message
    return message


def test_wiki_dump_as_the_authors_keep_it(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    dump = fx.wiki_dump(src)
    assert run("wiki", out, src, "--langs", "en", "--processes", "1") == {"en": len(fx.WIKI_EN)}
    assert fx.lines(out / "wiki" / "en.txt") == fx.WIKI_EN
    # The oracle: get-data-wiki.sh's own pipeline (before its tokenizer) on the same dump gives the same bytes.
    authors = subprocess.run(
        f'"{sys.executable}" -m wikiextractor.WikiExtractor "{dump}" --processes 1 -q -o - '
        '| sed "/^\\s*$/d" | grep -v "^<doc id=" | grep -v "</doc>$"',
        shell=True, capture_output=True, check=True, timeout=120).stdout
    assert (out / "wiki" / "en.txt").read_bytes() == authors
    ledger = json.loads((out / "downloads" / "ledger.json").read_text())
    entry = ledger[dump.name]
    assert entry["size"] == dump.stat().st_size and entry["origin"].startswith("from:")
    assert not list((out / "wiki").glob("*.tmp"))
    # Done outputs are skipped, even without the source files.
    dump.unlink()
    assert run("wiki", out, src, "--langs", "en") == {}


def test_para_opus_zip_and_iitb_tgz(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    fx.opus_zip(src)
    fx.iitb_tgz(src)
    counts = run("para", out, src, "--pairs", "fr-en,en-hi")
    assert counts == {"MultiUN.en-fr": 4, "IITB.en-hi": 2}
    for lg, expected in fx.opus_expected().items():
        assert fx.lines(out / "para" / f"MultiUN.en-fr.{lg}") == expected
    for lg, expected in fx.IITB.items():
        assert fx.lines(out / "para" / f"IITB.en-hi.{lg}") == expected
    assert sorted(p.name for p in (out / "para").iterdir()) == [
        "IITB.en-hi.en", "IITB.en-hi.hi", "MultiUN.en-fr.en", "MultiUN.en-fr.fr"]


def test_nmt_news_crawl_wmt16_and_newstest_sgml(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    fx.news_crawl(src, "en")
    fx.wmt16_en_ro(src)
    fx.dev_tgz(src)
    counts = run("nmt", out, src, "--langs", "en", "--pairs", "en-fr")
    assert counts["en"] == len(fx.NEWS_EN)
    assert fx.lines(out / "newscrawl" / "en.txt") == fx.NEWS_EN
    for lg, expected in fx.EUROPARL.items():
        assert fx.lines(out / "wmt16" / f"europarl-v8.en-ro.{lg}") == expected
    for lg, expected in fx.opus_expected().items():
        assert fx.lines(out / "wmt16" / f"SETIMES2.en-ro.{'ro' if lg == 'fr' else lg}") == expected
    for lg in ("en", "fr"):
        assert fx.lines(out / "newstest" / f"newstest2014.en-fr.{lg}") == fx.NT14_EXPECTED[lg]
        assert fx.lines(out / "newstest" / f"newstest2013.en-fr.{lg}") == fx.NT13[lg]


def test_xnli_downloads_join_prepare_xnli_extract(tmp_path):
    from fairseq_xlm.cli import prepare_xnli

    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    fx.xnli_zips(src)
    counts = run("xnli", out, src, "--langs", "en,es")
    raw = fx.copy_xnli_raw(tmp_path / "raw")
    direct = prepare_xnli.main(["extract", "--out", str(tmp_path / "direct"), "--langs", "en,es",
                                "--xnli-dir", str(raw), "--mnli-train", str(raw / "multinli_1.0_train.jsonl")])
    assert counts == direct and counts["train.en"] > 0
    names = sorted(p.name for p in (tmp_path / "direct").iterdir())
    assert sorted(p.name for p in (out / "xnli").iterdir() if p.name != ".acquired.json") == names
    for name in names:
        assert (out / "xnli" / name).read_bytes() == (tmp_path / "direct" / name).read_bytes(), name
    assert run("xnli", out, src, "--langs", "en,es") == {}  # done: skipped


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 40):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def test_bad_input_is_one_line_naming_the_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    # A wrong language code, by name, with near codes and where the list is.
    message = refused("wiki", tmp_path / "o1", src, "--langs", "eng")
    assert "--langs eng: no Wikipedia has this language code (did you mean" in message and "wiki_langs.py" in message
    # A missing --from file: its path and where it comes from.
    message = refused("para", tmp_path / "o2", src, "--pairs", "en-fr")
    assert str(src / "MultiUN.en-fr.txt.zip") in message and "object.pouta.csc.fi" in message
    # A corrupt zip (bad CRC) and a truncated tgz.
    _corrupt(fx.opus_zip(src))
    assert f"{src / 'MultiUN.en-fr.txt.zip'}: corrupt" in refused("para", tmp_path / "o3", src, "--pairs", "en-fr")
    tgz = fx.iitb_tgz(src)
    tgz.write_bytes(tgz.read_bytes()[:60])
    assert f"{tgz}: corrupt" in refused("para", tmp_path / "o4", src, "--pairs", "en-hi")
    # An empty dump and a truncated one.
    import bz2

    dump = src / "enwiki-latest-pages-articles.xml.bz2"
    dump.write_bytes(bz2.compress(b""))
    assert f"{dump}: no article text" in refused("wiki", tmp_path / "o5", src, "--langs", "en", "--processes", "1")
    good = fx.wiki_dump(src)
    good.write_bytes(good.read_bytes()[:300])
    message = refused("wiki", tmp_path / "o6", src, "--langs", "en", "--processes", "1")
    assert f"{dump}: WikiExtractor failed" in message
    assert not (tmp_path / "o6" / "wiki" / "en.txt").exists() and not (tmp_path / "o6" / "wiki" / "en.txt.tmp").exists()
    # A .gz that is not one.
    fx.news_crawl(src, "en")
    (src / "news.2007.en.shuffled.gz").write_bytes(b"not gzip at all")
    assert f"{src / 'news.2007.en.shuffled.gz'}: corrupt" in refused("nmt", tmp_path / "o7", src, "--langs", "en",
                                                                      "--parts", "newscrawl")
    # Sides of different lengths: the shorter one named, nothing left under the final names.
    import zipfile

    with zipfile.ZipFile(src / "Tanzil.en-ur.txt.zip", "w") as zf:
        zf.writestr("Tanzil.en-ur.en", "one\ntwo\nthree\n")
        zf.writestr("Tanzil.en-ur.ur", "ایک\nدو\n")
    message = refused("para", tmp_path / "o8", src, "--pairs", "en-ur")
    assert f"{src / 'Tanzil.en-ur.txt.zip'}:*.en-ur.ur: ends at line 2" in message and "not line-aligned" in message
    assert not list((tmp_path / "o8" / "para").iterdir())


KILLER = textwrap.dedent("""
    import os, signal, sys, types
    # The package without its __init__ (which imports torch and fairseq: seconds that get_data does not need).
    package = types.ModuleType("fairseq_xlm")
    package.__path__ = [os.path.join(os.environ["REPO"], "fairseq_xlm")]
    sys.modules["fairseq_xlm"] = package
    from fairseq_xlm.acquire import textfiles
    real = textfiles.Progress.tick
    def tick(self, n):  # every writer ticks once a line: SIGKILL at the 3rd, the .tmp half-written on disk
        if n == 3:
            import gc, io
            for f in gc.get_objects():  # as a large output would have: lines on disk before the kill
                if isinstance(f, io.TextIOWrapper) and str(getattr(f, "name", "")).endswith(".tmp"):
                    f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        real(self, n)
    textfiles.Progress.tick = tick
    from fairseq_xlm.cli import get_data
    get_data.main(sys.argv[1:])
""")

KILLED = {  # family: (fixture builder, arguments, outputs)
    "para": (fx.opus_zip, ["--pairs", "en-fr"], ["para/MultiUN.en-fr.en", "para/MultiUN.en-fr.fr"]),
    "nmt": (fx.news_crawl, ["--langs", "en", "--parts", "newscrawl"], ["newscrawl/en.txt"]),
    "wiki": (fx.wiki_dump, ["--langs", "en", "--processes", "1"], ["wiki/en.txt"]),
}


@pytest.mark.parametrize("family", sorted(KILLED))
def test_kill_during_extraction_then_rerun_gives_the_same_bytes(tmp_path, family):
    build, args, outputs = KILLED[family]
    src = tmp_path / "src"
    src.mkdir()
    build(src)
    run(family, tmp_path / "clean", src, *args)
    out = tmp_path / "killed"
    env = dict(os.environ, REPO=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", KILLER, family, *args, "--from", str(src), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    first = out / outputs[0]
    assert not first.exists() and first.with_name(first.name + ".tmp").stat().st_size > 0
    run(family, out, src, *args)
    for name in outputs:
        assert (out / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()
    assert not list(out.glob("*/*.tmp"))


def test_list_prints_what_to_fetch_and_fetches_nothing(tmp_path, capsys):
    get_data.main(["para", "--pairs", "sw-en", "--out", str(tmp_path / "o"), "--list", "--mirror", "http://127.0.0.1:9"])
    assert capsys.readouterr().out.splitlines() == [
        "Tanzil.en-sw.txt.zip http://127.0.0.1:9/OPUS-Tanzil/v1/moses/en-sw.txt.zip",
        "GlobalVoices.en-sw.txt.zip http://127.0.0.1:9/OPUS-GlobalVoices/v2018q4/moses/en-sw.txt.zip"]
    get_data.main(["nmt", "--langs", "ro", "--parts", "newscrawl,newstest", "--out", str(tmp_path / "o"), "--list"])
    assert capsys.readouterr().out.splitlines() == [
        "news.2015.ro.shuffled.gz http://data.statmt.org/wmt16/translation-task/news.2015.ro.shuffled.gz",
        "dev.tgz http://data.statmt.org/wmt18/translation-task/dev.tgz"]
    assert not (tmp_path / "o").exists()
