"""``make replicate``'s settings: the environment variables ``recipes/replicate.sh`` read, with the same names,
defaults and checks (``QUICK=1``, ``SMOKE=1``, ``SEEDS``, ``CLAIMS``, ``LANGS``, ``PAIR``, ``LOW``, ...), and the
settings line that locks a study folder."""

import glob
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

from fairseq_xlm.cli.study.jobs import SettingsError

# old name -> new name (one naming across recipes); the old one keeps working with a warning
RENAMED = {"PRE_UPDATES": "PRE_MAX_UPDATE", "GENRE_UPDATES": "GENRE_MAX_UPDATE", "MT_UPDATES": "MT_MAX_UPDATE",
           "UMT_UPDATES": "UMT_MAX_UPDATE"}
# (full, QUICK=1, SMOKE=1) defaults of the size settings
SIZES = {
    "VERSES": ("0,300,300", "3000,200,200", "300,40,40"),  # max monolingual verses per language: train,valid,test
    "PARA_VERSES": ("0,200,300", "3000,150,150", "200,30,30"),
    "LOW_TRAIN": ("2000", "800", "100"),  # LOW's training verses: about a quarter of the others
    "VOCAB": ("4000", "2000", "300"),
    "PRE_MAX_UPDATE": ("2500", "600", "8"),
    "GENRE_MAX_UPDATE": ("1500", "400", "6"),
    "MT_MAX_UPDATE": ("800", "240", "4"),
    "UMT_MAX_UPDATE": ("500", "120", "4"),
}
# the variables of this study (check_env warns about the others that some recipe reads)
VARIABLES = ("PYTHON", "USER_DIR", "QUICK", "SMOKE", "OUT", "LANGS", "PAIR", "TRAIN_LANG", "LOW", "D_OBJECTIVE",
             "SEEDS", "SMOKE_SEEDS", "QUICK_SEEDS", "CLAIMS", "SMOKE_CLAIMS", "PRE_LR", "MT_LR", "GENRE_LR", "JOBS",
             "DEVICE_FLAGS", "LAUNCHER", "stage", "stop_stage", *SIZES, *RENAMED)
RECIPES_RUN = ("umt.sh", "evaluate_mt.sh", "xnli.sh")  # they inherit the study's environment


@dataclass
class Settings:
    """One study's settings (see docs/replicate.md for each)."""

    root: str
    python: str
    user_dir: str
    out: str
    raw: str  # the user's raw folder, or "" for the Bible corpus
    smoke: bool
    quick: bool
    langs: List[str]
    pair: str
    train_lang: str
    low: str
    d_objective: str
    seeds: List[int]
    claims: List[str]
    sizes: Dict[str, str]
    pre_lr: str
    mt_lr: str
    genre_lr: str
    jobs: int
    device_flags: List[str]
    warnings: List[str] = field(default_factory=list)

    def size(self, name: str) -> int:
        """A size setting as an int (VOCAB, LOW_TRAIN, *_MAX_UPDATE)."""
        return int(self.sizes[name])

    @property
    def pair_langs(self) -> Tuple[str, str]:
        """PAIR's two languages."""
        l1, _, l2 = self.pair.partition("-")
        return l1, l2

    def lock_line(self) -> str:
        """The line in OUT/runs/settings (``recipes/replicate.sh`` wrote the same, so its folders are reused)."""
        s = self.sizes
        raw = self.raw or f"bible:{s['VERSES']}/{s['PARA_VERSES']}"
        return (f"raw={raw} langs={','.join(self.langs)} pair={self.pair} "
                f"low={self.low}:{s['LOW_TRAIN']}:{self.d_objective} vocab={s['VOCAB']} "
                f"pre={s['PRE_MAX_UPDATE']}@{self.pre_lr} genre={s['GENRE_MAX_UPDATE']}@{self.genre_lr} "
                f"mt={s['MT_MAX_UPDATE']} umt={s['UMT_MAX_UPDATE']}@{self.mt_lr}")

    def command(self) -> str:
        """The command line that makes these settings' study, for the report."""
        prefix = "SMOKE=1 " if self.smoke else ("QUICK=1 " if self.quick else "")
        return f"{prefix}python -m fairseq_xlm.cli.replicate run{' ' + self.raw if self.raw else ''}"


def _get(env: Mapping[str, str], name: str, default: str, empty_ok: bool = False) -> str:
    """``${NAME:-default}`` (``${NAME-default}`` with ``empty_ok``: an empty value is kept)."""
    value = env.get(name)
    if value is None or (value == "" and not empty_ok):
        return default
    return value


def from_env(env: Mapping[str, str], raw: str = "", root: Optional[str] = None) -> Settings:
    """The settings of ``env`` (the process environment), checked; SettingsError names the bad variable."""
    root = root or os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    env = dict(env)
    warnings = []
    for old, new in RENAMED.items():
        if env.get(old):
            if env.get(new):
                warnings.append(f"{old} is the old name of {new}; both are set, {new}={env[new]} is used")
            else:
                warnings.append(f"{old} is renamed {new} (one name across recipes); using {new}={env[old]}")
                env[new] = env[old]
    smoke, quick = _get(env, "SMOKE", "0") == "1", _get(env, "QUICK", "0") == "1"
    column = 2 if smoke else (1 if quick else 0)
    sizes = {name: _get(env, name, values[column]) for name, values in SIZES.items()}
    if smoke:
        out = _get(env, "OUT", os.path.join(os.environ.get("TMPDIR") or "/tmp", "fairseq_xlm_replicate_smoke"))
        seeds, claims = _get(env, "SMOKE_SEEDS", "1,2"), _get(env, "SMOKE_CLAIMS", "a,d,e")
    elif quick:
        out = _get(env, "OUT", os.path.join(root, "data-bin", "replicate-quick"))
        seeds, claims = _get(env, "QUICK_SEEDS", "1,2"), _get(env, "CLAIMS", "a,b,c,d,e")
    else:
        out = _get(env, "OUT", os.path.join(root, "data-bin", "replicate"))
        seeds, claims = _get(env, "SEEDS", "1,2,3"), _get(env, "CLAIMS", "a,b,c,d,e")
    nproc = os.cpu_count() or 1
    jobs = _get(env, "JOBS", str(min(nproc, 4)))
    for name in (*[n for n in SIZES if "VERSES" not in n], "JOBS"):
        value = jobs if name == "JOBS" else sizes[name]
        if not re.fullmatch(r"[0-9]+", value) or int(value) == 0:
            raise SettingsError(f"{name}={value}: not a positive integer (check the settings)")
    if not re.fullmatch(r"[a-e](,[a-e])*", claims):
        raise SettingsError(f"CLAIMS={claims}: expected letters a-e, e.g. a,d")
    if not re.fullmatch(r"[0-9]+(,[0-9]+)*", seeds):
        raise SettingsError(f"SEEDS={seeds}: expected e.g. 1,2,3")
    d_objective = _get(env, "D_OBJECTIVE", "clm")
    if d_objective not in ("clm", "mlm"):
        raise SettingsError(f"D_OBJECTIVE={d_objective}: clm or mlm")
    langs_text = _get(env, "LANGS", "en,es,ny")
    langs = [x for x in langs_text.split(",") if x]
    pair, low, train_lang = _get(env, "PAIR", "en-es", True), _get(env, "LOW", "ny", True), _get(env, "TRAIN_LANG",
                                                                                                 "en")
    if train_lang not in langs:
        raise SettingsError(f"TRAIN_LANG={train_lang} is not in LANGS={langs_text}")
    for lang in (pair.split("-", 1) if pair else []):
        if lang not in langs:
            raise SettingsError(f"PAIR={pair}: {lang} is not in LANGS={langs_text}")
    if low:
        if low not in langs:
            raise SettingsError(f"LOW={low} is not in LANGS={langs_text}")
        if len(langs) < 2:
            raise SettingsError(f"LOW={low} needs another language in LANGS")
    if raw and not os.path.isdir(raw):
        raise SettingsError(f"RAW_DIR {raw} is not a folder")
    python = _get(env, "PYTHON", sys.executable)
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise SettingsError(f"PYTHON={python} not found: run 'make replicate' (it creates .venv) or set PYTHON")
    return Settings(
        root=root, python=python, user_dir=_get(env, "USER_DIR", os.path.join(root, "fairseq_xlm")),
        out=os.path.abspath(out), raw=os.path.abspath(raw) if raw else "", smoke=smoke, quick=quick, langs=langs,
        pair=pair, train_lang=train_lang, low=low, d_objective=d_objective, seeds=[int(s) for s in seeds.split(",")],
        claims=claims.split(","), sizes=sizes, pre_lr=_get(env, "PRE_LR", "0.004"), mt_lr=_get(env, "MT_LR", "0.002"),
        genre_lr=_get(env, "GENRE_LR", "0.0005"), jobs=int(jobs),
        device_flags=_get(env, "DEVICE_FLAGS", "--cpu").split(), warnings=warnings)


_ASSIGNMENT = re.compile(r"(?:^|[\s;)])([A-Z][A-Z0-9_]*)=\$\{\1:?-", re.M)
_RENAMED_LINE = re.compile(r"^\s*renamed_var\s+([A-Z][A-Z0-9_]*)", re.M)


def check_env(env: Mapping[str, str], recipes_dir: str) -> List[str]:
    """Warnings for the variables of ``env`` that some recipe reads but neither this study nor the recipes it
    runs do (as recipes/lib/env.sh's check_recipe_env: a misplaced variable would silently keep a default)."""
    readers: Dict[str, List[str]] = {}
    for path in sorted(glob.glob(os.path.join(recipes_dir, "*.sh"))):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for name in set(_ASSIGNMENT.findall(text)) | set(_RENAMED_LINE.findall(text)):
            readers.setdefault(name, []).append(os.path.basename(path))
    own = set(VARIABLES)
    for name, files in readers.items():
        if any(f in RECIPES_RUN for f in files):
            own.add(name)
    return [f"{name} is set but make replicate does not read it (read by {', '.join(readers[name])})"
            for name in sorted(env) if name in readers and name not in own
            and not name.startswith(("OMP_", "MKL_", "CUDA_"))]
