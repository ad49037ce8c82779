"""Extract raw text from the verse-aligned Bible corpus (en/es/ny) for ``fairseq_xlm.cli.prepare``.

    python -m fairseq_xlm.cli.bible --out raw/ --langs en,es --pairs en-es [--labels] [--train-verses 600 ...]

writes, for each split (train/valid/test):
    {split}.{lang}                 monolingual text, one verse a line (verses where {lang} is non-empty)
    {split}.{l1}-{l2}.{l1|l2}      parallel text, only verses where both sides are non-empty
    {split}.{lang}.label           (--labels) the verse's genre (Law, History, ..., Revelation)
    {name}.id                      (--ids) the verse ids (BB.CCC.VVV) of every file above

Splits are made of whole chapters (or books), never of single verses, because neighbouring verses
nearly repeat each other and would leak between train and test. Test and valid take the first units
of a seeded hash order; each output then takes whole units of its split in that same order until its
verse limit is met, so a small slice still spans many books (and genres) yet stays deterministic.
"""

import csv
import gzip
import hashlib
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_xlm.cli import config_parser, setup_logging
from fairseq_xlm.data.langs import parse_langs
from fairseq_xlm.atomic_lines import write_lines

logger = logging.getLogger("fairseq_xlm.cli.bible")

SPLITS = ("train", "valid", "test")
COLUMNS = ["id", "book", "chapter", "verse"]
TSV_NAME = "bible.en-es-ny.tsv.gz"
# Genres by book number (Protestant canon order), as in /work/shared/data/README.md.
GENRES: Sequence[Tuple[int, int, str]] = (
    (1, 5, "Law"),
    (6, 17, "History"),
    (18, 22, "Poetry"),
    (23, 39, "Prophets"),
    (40, 43, "Gospels"),
    (44, 44, "Acts"),
    (45, 65, "Letters"),
    (66, 66, "Revelation"),
)


def genre(book: int) -> str:
    """The genre label of book number ``book`` (1-66)."""
    for lo, hi, name in GENRES:
        if lo <= book <= hi:
            return name
    raise ValueError(f"book number {book} is outside 1-66")


def default_tsv() -> str:
    """$XLM_BIBLE_TSV, else shared/data/ beside the repository checkout."""
    env = os.environ.get("XLM_BIBLE_TSV")
    if env:
        return env
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # fairseq_xlm/cli/ -> repo
    return os.path.join(os.path.dirname(repo), "shared", "data", TSV_NAME)


def _help(text: str, **kwargs):
    return field(metadata={"help": text}, **kwargs)


@dataclass
class BibleConfig:
    """What to extract (every field is a command-line flag)."""

    out: str = _help("output folder for the raw text files")
    tsv: str = _help("the corpus (default: $XLM_BIBLE_TSV or shared/data beside the checkout)",
                     default_factory=default_tsv)
    langs: str = _help("monolingual languages, e.g. en,es,ny", default="")
    pairs: str = _help("parallel pairs, e.g. en-es,en-ny", default="")
    split_by: str = _help("unit of the splits: chapter or book", default="chapter")
    valid_frac: float = _help("share of units held out for valid", default=0.02)
    test_frac: float = _help("share of units held out for test", default=0.02)
    valid_units: str = _help("explicit valid units instead ('40' a book, '40.5' a chapter)", default="")
    test_units: str = _help("explicit test units instead (same format)", default="")
    seed: int = _help("seed of the unit hash order", default=1)
    train_verses: int = _help("max monolingual train verses per language (0: all)", default=0)
    valid_verses: int = _help("max monolingual valid verses per language (0: all)", default=0)
    test_verses: int = _help("max monolingual test verses per language (0: all)", default=0)
    para_train_verses: int = _help("max parallel train verses per pair (0: all)", default=0)
    para_valid_verses: int = _help("max parallel valid verses per pair (0: all)", default=0)
    para_test_verses: int = _help("max parallel test verses per pair (0: all)", default=0)
    disjoint_para: bool = _help("monolingual and parallel text use different units (MLM vs TLM data)",
                                default=False)
    disjoint_mono: bool = _help("each language's monolingual text uses different units (no hidden "
                                "parallelism between monolingual corpora)", default=False)
    labels: bool = _help("also write {split}.{lang}.label genre files", default=False)
    ids: bool = _help("also write verse id files ({name}.id)", default=False)


@dataclass
class Verse:
    """One row of the corpus: id ``BB.CCC.VVV`` and text per language ('' when missing)."""

    id: str
    book: int
    chapter: int
    text: Dict[str, str] = field(default_factory=dict)


def read_tsv(path: str, langs: Sequence[str]) -> List[Verse]:
    """Rows of the gzipped TSV with the text of ``langs``; one clear error for a bad file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: Bible corpus not found (set --tsv or $XLM_BIBLE_TSV)")
    verses = []
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = reader.fieldnames or []
        missing = [c for c in COLUMNS + list(langs) if c not in header]
        if missing:
            raise ValueError(f"{path}: header {header} lacks column(s) {missing}")
        for row in reader:
            book, chapter = row["id"].split(".")[:2]
            text = {lang: (row[lang] or "").strip() for lang in langs}
            verses.append(Verse(row["id"], int(book), int(chapter), text))
    return verses


def unit_of(verse: Verse, split_by: str) -> str:
    """The split unit of a verse: '40' (book) or '40.5' (chapter)."""
    return f"{verse.book}" if split_by == "book" else f"{verse.book}.{verse.chapter}"


def hash_order(units: Sequence[str], seed: int) -> List[str]:
    """``units`` in a deterministic pseudo-random order (md5 of seed and unit)."""
    return sorted(units, key=lambda u: hashlib.md5(f"{seed}:{u}".encode()).hexdigest())


def assign_splits(units: Sequence[str], cfg: BibleConfig) -> Dict[str, str]:
    """unit -> split: explicit --valid-units/--test-units, else fractions of the hash order."""
    explicit = {"valid": _unit_list(cfg.valid_units), "test": _unit_list(cfg.test_units)}
    unknown = sorted((explicit["valid"] | explicit["test"]) - set(units))
    if unknown:
        raise ValueError(f"--valid-units/--test-units name unknown {cfg.split_by}(s) {unknown}")
    if explicit["valid"] & explicit["test"]:
        raise ValueError(f"--valid-units and --test-units share {sorted(explicit['valid'] & explicit['test'])}")
    order = hash_order(units, cfg.seed)
    out = {u: "train" for u in units}
    for split, frac in (("test", cfg.test_frac), ("valid", cfg.valid_frac)):
        if explicit[split]:
            chosen = explicit[split]
        else:
            free = [u for u in order if out[u] == "train" and u not in explicit["valid"] | explicit["test"]]
            n = max(1, round(frac * len(units))) if frac > 0 else 0
            chosen = set(free[:n])
        out.update({u: split for u in chosen})
    return out


def _unit_list(spec: Optional[str]) -> set:
    return {u.strip() for u in (spec or "").split(",") if u.strip()}


@dataclass
class Output:
    """One consumer of verses: a monolingual language or a parallel pair, with a verse limit."""

    langs: Tuple[str, ...]  # (lang,) or (l1, l2)
    limit: int  # 0 = no limit
    verses: List[Verse] = field(default_factory=list)

    def wants(self, verse: Verse) -> bool:
        return all(verse.text[lang] for lang in self.langs)

    def full(self) -> bool:
        return self.limit > 0 and len(self.verses) >= self.limit

    def take(self, unit_verses: Sequence[Verse]) -> None:
        for verse in unit_verses:
            if self.full():
                return
            if self.wants(verse):
                self.verses.append(verse)


def fill(outputs: List[Output], groups: List[List[int]], order: Sequence[str], by_unit) -> None:
    """Hand out whole units in ``order``: round-robin over exclusive groups, shared inside a group."""
    pending = list(range(len(groups)))
    turn = 0
    for unit in order:
        pending = [g for g in pending if not all(outputs[i].full() for i in groups[g])]
        if not pending:
            break
        group = groups[pending[turn % len(pending)]]
        turn += 1
        for i in group:
            outputs[i].take(by_unit[unit])


def build_schedules(outputs: List[Output], disjoint_para: bool, disjoint_mono: bool) -> List[List[List[int]]]:
    """Schedules of groups of output indices. Each schedule walks all units on its own, so schedules
    overlap; inside a schedule, groups get different units; the outputs of one group share units."""
    mono = [i for i, o in enumerate(outputs) if len(o.langs) == 1]
    para = [i for i, o in enumerate(outputs) if len(o.langs) == 2]
    mono_groups = [[i] for i in mono] if disjoint_mono else [mono]
    schedules = [mono_groups + [para]] if disjoint_para else [mono_groups, [para]]
    return [[g for g in groups if g] for groups in schedules if any(groups)]


def extract(cfg: BibleConfig) -> Dict[str, int]:
    """Write the raw files for ``cfg``; returns {file name: number of lines}."""
    langs = parse_langs(cfg.langs) if cfg.langs else []
    pairs = [tuple(parse_langs(p.replace("-", ","), "--pairs")) for p in _unit_list(cfg.pairs)]
    pairs = sorted(pairs)
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"--pairs {cfg.pairs!r}: give pairs as l1-l2, e.g. en-es,en-ny")
    if not langs and not pairs:
        raise ValueError("nothing to extract: give --langs and/or --pairs")
    all_langs = sorted(set(langs) | {lang for p in pairs for lang in p})
    verses = read_tsv(cfg.tsv, all_langs)

    by_unit: Dict[str, List[Verse]] = {}
    for verse in verses:
        by_unit.setdefault(unit_of(verse, cfg.split_by), []).append(verse)
    split_of = assign_splits(list(by_unit), cfg)
    order = hash_order(list(by_unit), cfg.seed + 1)

    os.makedirs(cfg.out, exist_ok=True)
    counts: Dict[str, int] = {}
    for split in SPLITS:
        split_order = [u for u in order if split_of[u] == split]
        outputs = [Output((lang,), getattr(cfg, f"{split}_verses")) for lang in langs]
        outputs += [Output(p, getattr(cfg, f"para_{split}_verses")) for p in pairs]
        for groups in build_schedules(outputs, cfg.disjoint_para, cfg.disjoint_mono):
            fill(outputs, groups, split_order, by_unit)
        for out in outputs:
            # Canonical Bible order inside a file keeps neighbouring verses together (useful for streams).
            out.verses.sort(key=lambda v: v.id)
            counts.update(_write_output(cfg, split, out))
    for name, n in sorted(counts.items()):
        logger.info(f"{os.path.join(cfg.out, name)}: {n} lines")
    return counts


def _write_output(cfg: BibleConfig, split: str, out: Output) -> Dict[str, int]:
    if not out.verses:
        raise ValueError(
            f"split {split} has no verses for {'-'.join(out.langs)}: give it more units (--valid-frac, "
            f"--test-frac, --valid-units, --test-units), --disjoint-* flags split them further"
        )
    written = {}
    if len(out.langs) == 1:
        (lang,) = out.langs
        names = {lang: f"{split}.{lang}"}
        if cfg.labels:
            write_lines(os.path.join(cfg.out, f"{split}.{lang}.label"), [genre(v.book) for v in out.verses])
        if cfg.ids:
            write_lines(os.path.join(cfg.out, f"{split}.{lang}.id"), [v.id for v in out.verses])
    else:
        pair = "-".join(out.langs)
        names = {lang: f"{split}.{pair}.{lang}" for lang in out.langs}
        if cfg.ids:
            write_lines(os.path.join(cfg.out, f"{split}.{pair}.id"), [v.id for v in out.verses])
    for lang, name in names.items():
        write_lines(os.path.join(cfg.out, name), [v.text[lang] for v in out.verses])
        written[name] = len(out.verses)
    return written


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, int]:
    """CLI entry point; returns {file name: lines}."""
    parser = config_parser(BibleConfig, "python -m fairseq_xlm.cli.bible", __doc__)
    cfg = BibleConfig(**vars(parser.parse_args(argv)))
    for split in SPLITS:
        if getattr(cfg, f"{split}_verses") < 0 or getattr(cfg, f"para_{split}_verses") < 0:
            raise SystemExit(f"error: --{split}-verses / --para-{split}-verses must be >= 0")
    if not (0 <= cfg.valid_frac < 1 and 0 <= cfg.test_frac < 1):
        raise SystemExit("error: --valid-frac and --test-frac must be in [0, 1)")
    if cfg.split_by not in ("chapter", "book"):
        raise SystemExit(f"error: --split-by {cfg.split_by!r}: use chapter or book")
    try:
        return extract(cfg)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    setup_logging(stream=sys.stderr)
    main(sys.argv[1:])
