"""Peak memory of get_data's extraction at 1x and 10x input: flat means streaming.

    python bench/acquire_memory.py [--pages 2000] [--lines 200000]

Builds, in a temporary folder, a Wikipedia dump of PAGES articles (templates, links, refs, tables) bz2'd, a
News Crawl .gz of LINES lines and an OPUS moses zip of LINES pairs, then runs ``get_data`` on each at 1x and
10x with ``--from`` and prints the peak resident memory of the whole process tree (get_data + WikiExtractor's
processes; /proc sampled every 20 ms) and the time. Run it on an idle machine for the times.
"""

import argparse
import bz2
import gzip
import os
import random
import subprocess
import sys
import tempfile
import time
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("the of and to in a is was for on as with by he at from his an were are which this be or has had not "
         "first one their its new after who they have her she two been other when there all during into school "
         "time may years more most only over city some world would where later up such used many can state").split()


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30))).capitalize() + "."


def pool(rng: random.Random, n: int = 5000) -> list:
    """Sentences to draw lines from (drawing is cheaper than composing each line)."""
    return [sentence(rng) for _ in range(n)]


def page(title: str, ns: int, pid: int, text: str) -> str:
    return (f"  <page>\n    <title>{title}</title>\n    <ns>{ns}</ns>\n    <id>{pid}</id>\n    <revision>\n"
            f"      <id>{pid}</id>\n      <text bytes=\"{len(text)}\" xml:space=\"preserve\">{text}</text>\n"
            "    </revision>\n  </page>\n")


def make_dump(path: str, pages: int, rng: random.Random) -> None:
    with bz2.open(path, "wt", encoding="utf-8") as f:
        f.write('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">\n'
                "<siteinfo>\n<sitename>Wikipedia</sitename>\n<dbname>enwiki</dbname>\n"
                "<base>https://en.wikipedia.org/wiki/Main_Page</base>\n<namespaces>\n"
                '<namespace key="0" case="first-letter" />\n<namespace key="10" case="first-letter">Template</namespace>\n'
                "</namespaces>\n</siteinfo>\n")
        # One element a line, as real dumps (WikiExtractor reads them line by line).
        f.write(page("Template:Nowrap", 10, 1, "&lt;span&gt;{{{1}}}&lt;/span&gt;"))
        for i in range(pages):
            body = "\n\n".join(
                f"'''{sentence(rng)}''' [[{rng.choice(WORDS)}|{rng.choice(WORDS)}]] {{{{nowrap|{sentence(rng)}}}}}"
                f"&lt;ref&gt;{{{{cite web |title={rng.choice(WORDS)}}}}}&lt;/ref&gt; {sentence(rng)}\n== Section ==\n"
                f"{{| class=\"wikitable\"\n| a || b\n|}}\n{sentence(rng)}" for _ in range(4))
            f.write(page(f"Article {i}", 0, i + 10, body))
        f.write("</mediawiki>\n")


def make_text(folder: str, lines: int, rng: random.Random) -> None:
    sentences = pool(rng)
    with gzip.open(os.path.join(folder, "news.2007.en.shuffled.gz"), "wt", encoding="utf-8", compresslevel=1) as f:
        f.writelines(s + "\n" for s in rng.choices(sentences, k=lines))
    with zipfile.ZipFile(os.path.join(folder, "MultiUN.en-fr.txt.zip"), "w", zipfile.ZIP_DEFLATED) as zf:
        for lg in ("en", "fr"):
            with zf.open(f"MultiUN.en-fr.{lg}", "w") as member:
                for s in rng.choices(sentences, k=lines):
                    member.write((s + "\n").encode())


def tree_rss(root: int) -> int:
    """Resident bytes of ROOT and all its descendants."""
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parents[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            pass
    tree, grew = {root}, True
    while grew:
        new = {p for p, pp in parents.items() if pp in tree} - tree
        tree |= new
        grew = bool(new)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total


def measure(args) -> tuple:
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    start = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "fairseq_xlm.cli.get_data", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.02)
    if proc.returncode and args != ["--help"]:
        sys.exit(proc.stderr.read().decode())
    return peak, time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=500)
    parser.add_argument("--lines", type=int, default=50000)
    args = parser.parse_args()
    rng = random.Random(0)
    print(f"{'family':10} {'scale':>5} {'input MiB':>9} {'output lines':>12} {'peak RSS MiB':>12} {'seconds':>8}")
    # The floor: get_data's imports alone (importing fairseq_xlm loads torch and fairseq).
    peak, seconds = measure(["--help"])
    print(f"{'(imports)':10} {'':>5} {0:9.1f} {0:12d} {peak / 2**20:12.0f} {seconds:8.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for scale in (1, 10):
            src = os.path.join(tmp, f"src{scale}")
            os.makedirs(src)
            make_dump(os.path.join(src, "enwiki-latest-pages-articles.xml.bz2"), args.pages * scale, rng)
            make_text(src, args.lines * scale, rng)
            for family, extra, output in (
                    ("wiki", ["--langs", "en", "--processes", "1"], "wiki/en.txt"),
                    ("nmt", ["--langs", "en", "--years", "2007", "--parts", "newscrawl"], "newscrawl/en.txt"),
                    ("para", ["--pairs", "en-fr"], "para/MultiUN.en-fr.en")):
                out = os.path.join(tmp, f"out-{family}-{scale}")
                peak, seconds = measure([family, "--out", out, "--from", src, *extra])
                size = sum(os.path.getsize(os.path.join(src, n)) for n in os.listdir(src)
                           if {"wiki": "enwiki", "nmt": "news.", "para": "MultiUN"}[family] in n)
                with open(os.path.join(out, output), "rb") as f:
                    n = sum(1 for _ in f)
                print(f"{family:10} {scale:>4}x {size / 2**20:9.1f} {n:12d} {peak / 2**20:12.0f} {seconds:8.1f}",
                      flush=True)


if __name__ == "__main__":
    main()
