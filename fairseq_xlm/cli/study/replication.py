"""``make replicate``: the XLM paper's orderings at small scale, several seeds per arm, paired comparisons.

Claims (one section each in OUT/REPLICATION.md; a claim whose data is missing is listed as skipped, with why):
  (a) zero-shot classification after random / CLM / MLM / MLM+TLM pretraining   (needs labels, PAIR)
  (b) supervised MT from random / CLM / MLM init                                (needs PAIR)
  (c) unsupervised MT (AE + BT) from random / CLM / MLM init                    (needs PAIR)
  (d) LOW's perplexity pretrained on LOW alone, + one, + every other language   (needs LOW)
  (e) cross-lingual retrieval P@1 after random / MLM / MLM+TLM pretraining      (needs PAIR)
Stages: 1 data (+ plan)  2 pretraining (+ random-init checkpoints)  3 classification  4 supervised MT
5 unsupervised MT  6 perplexity (+ retrieval)  7 OUT/REPLICATION.md (+ curves-*.png). Each stage's jobs are
arms x seeds (``jobs.run_pool``); each job calls the existing recipes or fairseq as subprocesses, then writes
its numbers as records (``gather``). Every arm of a claim gets the same settings and number of updates; seeds
change initialisation, batches and masks.
"""

import os
import time
from typing import Callable, Dict, List, Sequence, Tuple

from fairseq_xlm.atomic_lines import write_lines
from fairseq_xlm.cli.study import gather, report
from fairseq_xlm.cli.study.jobs import Job, JobLog, Launcher, lock_settings, run_pool
from fairseq_xlm.cli.study.settings import Settings

STAGES = ["data: shared BPE, binarize, classification labels", "pretraining", "(a) classification",
          "(b) supervised MT", "(c) unsupervised MT", "(d) perplexity, (e) retrieval", "report"]
PlanLine = Tuple[str, bool, List[str], str]


class Paths:
    """The study's folders under OUT."""

    def __init__(self, out: str):
        self.out = out
        self.raw = os.path.join(out, "raw")
        self.runs = os.path.join(out, "runs")
        self.done = os.path.join(self.runs, "done")
        self.logs = os.path.join(self.runs, "logs")
        self.results = os.path.join(out, "results")

    def ckpt(self, arm: str, seed: int) -> str:
        """The pretraining (or random-init) checkpoint of an arm and seed."""
        return os.path.join(self.runs, "pre", arm, f"s{seed}", "checkpoint_last.pt")


def _count(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _every(n: int, k: int) -> int:
    """The validation interval that gives k validations in n updates (at least 1)."""
    return n // k if n // k > 0 else 1


# ------------------------------------------------------------------------------------------------ data
def subsample_evenly(path: str, k: int, n: int) -> None:
    """Keep exactly min(k, n) evenly spread lines of ``path`` (line i, from 1, when floor(i k / n) steps up),
    so a smaller corpus still spans the whole text; line-aligned files get the same lines with the same n."""
    with open(path, encoding="utf-8", newline="\n") as f:
        lines = [line.rstrip("\n") for line in f]
    write_lines(path, [line for i, line in enumerate(lines, 1) if k >= n or (i * k) // n > ((i - 1) * k) // n])


def label_raw(raw: str, out: str, train_lang: str, langs: Sequence[str]) -> List[str]:
    """The prepare_xnli raw layout (``{split}.{lang}.input0`` / ``.label``, ``labels.txt``) from a raw folder
    whose monolingual files have ``{split}.{lang}.label`` beside them: train on ``train_lang`` only, valid and
    test on every language of ``langs`` that has labelled valid and test files. Returns those languages;
    raises ValueError (naming the file) when ``train_lang`` has no labelled training text."""
    def labelled(split: str, lang: str) -> bool:
        return all(os.path.isfile(os.path.join(raw, f"{split}.{lang}{x}")) for x in ("", ".label"))

    if not labelled("train", train_lang):
        raise ValueError(f"{raw}/train.{train_lang}.label: missing, so there is nothing to train a classifier on")
    eval_langs = [lang for lang in langs if labelled("valid", lang) and labelled("test", lang)]
    files = [("train", train_lang)] + [(split, lang) for lang in eval_langs for split in ("valid", "test")]
    labels: Dict[str, None] = {}
    os.makedirs(out, exist_ok=True)
    for split, lang in files:
        text, tags = (gather.read_lines(os.path.join(raw, f"{split}.{lang}{x}")) for x in ("", ".label"))
        if len(text) != len(tags) or not text:
            raise ValueError(f"{raw}/{split}.{lang}.label: {len(tags)} labels for {len(text)} lines")
        labels.update(dict.fromkeys(tags))
        write_lines(os.path.join(out, f"{split}.{lang}.input0"), text)
        write_lines(os.path.join(out, f"{split}.{lang}.label"), tags)
    write_lines(os.path.join(out, "labels.txt"), sorted(labels))
    return eval_langs


def data(s: Settings, p: Paths, log: JobLog) -> None:
    """Stage 1: raw text (the Bible corpus or RAW_DIR; LOW cut to LOW_TRAIN lines), shared BPE and binarized
    data-bin in OUT, and the genre classification data in OUT/genre when the training language has labels."""
    if not os.path.isdir(p.raw):
        tmp = p.raw + ".tmp"
        log.run(["rm", "-rf", tmp])
        if s.raw:
            log.run(["cp", "-r", s.raw, tmp])
        else:
            v = s.sizes["VERSES"].split(",")
            pv = s.sizes["PARA_VERSES"].split(",")
            # Each language's monolingual text and the parallel text come from different chapters: no hidden
            # parallel data in the MLM arms (as Wikipedia), TLM adds a parallel corpus of its own.
            log.run([s.python, "-m", "fairseq_xlm.cli.bible", "--out", tmp, "--langs", ",".join(s.langs),
                     *(["--pairs", s.pair] if s.pair else []), "--disjoint-mono", "--disjoint-para", "--labels",
                     "--ids", "--valid-frac", "0.03", "--test-frac", "0.03", "--train-verses", v[0],
                     "--valid-verses", v[1], "--test-verses", v[2], "--para-train-verses", pv[0],
                     "--para-valid-verses", pv[1], "--para-test-verses", pv[2]])
        if s.low:
            n = _count(os.path.join(tmp, f"train.{s.low}"))
            for suffix in ("", ".label", ".id"):
                path = os.path.join(tmp, f"train.{s.low}{suffix}")
                if os.path.isfile(path):
                    subsample_evenly(path, s.size("LOW_TRAIN"), n)
        os.replace(tmp, p.raw)
    for name in sorted(os.listdir(p.raw)):
        if name.startswith("train.") and not name.endswith((".label", ".id")):
            log.write(f"  {_count(os.path.join(p.raw, name))} {os.path.join(p.raw, name)}\n")
    log.run([s.python, "-m", "fairseq_xlm.cli.prepare", "--raw", p.raw, "--destdir", s.out, "--langs",
             ",".join(s.langs), "--vocab-size", s.sizes["VOCAB"]])
    if not os.path.isfile(os.path.join(s.out, "genre", "labels.txt")) and \
            os.path.isfile(os.path.join(p.raw, f"train.{s.train_lang}.label")):
        genre_raw = os.path.join(p.runs, "raw-genre")
        log.run(["rm", "-rf", genre_raw])
        label_raw(p.raw, genre_raw, s.train_lang, s.langs)
        log.run([s.python, "-m", "fairseq_xlm.cli.prepare_xnli", "binarize", "--raw", genre_raw, "--data", s.out,
                 "--subdir", "genre"])


def genre_eval_langs(s: Settings) -> List[str]:
    """The languages other than TRAIN_LANG with labelled test text in OUT/genre."""
    return [lang for lang in s.langs if lang != s.train_lang
            and os.path.isfile(os.path.join(s.out, "genre", f"test.{lang}.label"))]


def low_arms(s: Settings) -> List[str]:
    """Claim (d)'s arms: LOW alone, then one more language at a time (the last has every language)."""
    arms, acc = [], s.low
    arms.append(acc)
    for lang in s.langs:
        if lang != s.low:
            acc = f"{acc}+{lang}"
            arms.append(acc)
    return arms


def plan(s: Settings, p: Paths) -> List[PlanLine]:
    """Per claim: run or skipped (why), and its arms in the order the paper expects (worst first); written to
    OUT/results/plan.tsv."""
    a_arms = ["random", "clm", "mlm"] + (["mlm_tlm"] if s.pair else [])
    eval_langs = genre_eval_langs(s) if os.path.isfile(os.path.join(s.out, "genre", "labels.txt")) else []
    why_a = ""
    if not os.path.isfile(os.path.join(p.raw, f"train.{s.train_lang}.label")):
        why_a = f"no labels: {p.raw}/train.{s.train_lang}.label is missing"
    elif not eval_langs:
        why_a = "no other language has labelled valid/test text"
    lines: List[PlanLine] = []
    lines.append(("a", False, a_arms, why_a) if why_a else (
        "a", True, a_arms, f"A classifier trained on {s.train_lang} only, tested zero-shot on {','.join(eval_langs)}."))
    mt = ["random", "clm", "mlm"]
    if s.pair:
        lines.append(("b", True, mt, f"MT steps on {s.pair} (both directions) from each initialisation."))
        lines.append(("c", True, mt, f"Denoising + online back-translation on {s.pair} monolingual text."))
    else:
        lines += [("b", False, mt, "no parallel pair (PAIR is empty)"),
                  ("c", False, mt, "no pair to translate (PAIR is empty)")]
    if s.low:
        n = _count(os.path.join(p.raw, f"train.{s.low}"))
        lines.append(("d", True, low_arms(s), f"{s.d_objective} perplexity (test.{s.low}) on held-out {s.low}; "
                                              f"{s.low} has {n} training sentences."))
    else:
        lines.append(("d", False, [], "no low-resource language (LOW is empty)"))
    e_arms = ["random", "mlm", "mlm_tlm"]
    lines.append(("e", True, e_arms, "P@1 of nearest-neighbour search (cosine, mean-pooled last layer) between the "
                                     f"two sides of test.{s.pair}.") if s.pair else
                 ("e", False, e_arms, "no parallel pair (PAIR is empty)"))
    lines = [(c, False, arms, f"not selected (CLAIMS={','.join(s.claims)})") if c not in s.claims
             else (c, runs, arms, note) for c, runs, arms, note in lines]
    os.makedirs(p.results, exist_ok=True)
    write_lines(os.path.join(p.results, "plan.tsv"),
                [f"{c}\t{'run' if runs else 'skipped'}\t{','.join(arms) if arms else '-'}\t{note}"
                 for c, runs, arms, note in lines])
    return gather.read_plan(os.path.join(p.results, "plan.tsv"))


# ----------------------------------------------------------------------------------------------- jobs
def pretrain_args(s: Settings) -> List[str]:
    """The pretraining flags every arm shares (the demo's: xlm_tiny, inverse_sqrt after 300 steps)."""
    return ["--user-dir", s.user_dir, "--task", "xlm_pretrain", "--arch", "xlm_tiny", "--criterion", "xlm_lm",
            "--dropout", "0.1", "--attention-dropout", "0", "--tokens-per-sample", "128", "--batch-size", "16",
            "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", s.pre_lr, "--lr-scheduler", "inverse_sqrt",
            "--warmup-updates", "300", "--clip-norm", "5", "--num-workers", "0", *s.device_flags]


def pretrain(log: JobLog, s: Settings, arm: str, seed: int, langs: str, kind: str, steps: str) -> None:
    """Pretrain ARM (KIND clm|mlm, STEPS the --clm-steps/--mlm-steps value). The best checkpoint is the best
    valid perplexity of LOW when the run has LOW (claim d reads it), else of all steps."""
    p = Paths(s.out)
    folder = os.path.dirname(p.ckpt(arm, seed))
    metric = f"{kind}_ppl_{s.low}" if s.low and s.low in langs.split(",") else "avg_ppl"
    every = str(_every(s.size("PRE_MAX_UPDATE"), 6))
    os.makedirs(folder, exist_ok=True)
    log.run([s.python, "-m", "fairseq_cli.train", s.out, *pretrain_args(s), "--langs", langs, f"--{kind}-steps", steps,
             "--seed", seed, "--max-update", s.sizes["PRE_MAX_UPDATE"], "--validate-interval-updates", every,
             "--save-interval-updates", every, "--keep-interval-updates", "1", "--validate-interval", "1000000",
             "--save-interval", "1000000", "--best-checkpoint-metric", metric, "--save-dir", folder,
             "--no-epoch-checkpoints", "--log-format", "simple", "--log-interval", "100"],
            tee=os.path.join(folder, "train.log"))
    for name in os.listdir(folder):  # the interval checkpoints (checkpoint_E_U.pt): only last and best are read
        parts = name[:-3].split("_") if name.endswith(".pt") else []
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            os.remove(os.path.join(folder, name))


def random_init(log: JobLog, s: Settings, seed: int) -> None:
    """The untrained model of the seed: the random-init arm."""
    log.run([s.python, "-m", "fairseq_xlm.cli.demo", "random-init", Paths(s.out).ckpt("random", seed), s.out,
             *pretrain_args(s), "--langs", ",".join(s.langs), "--mlm-steps", ",".join(s.langs), "--seed", seed])


def genre_job(log: JobLog, s: Settings, arm: str, seed: int) -> None:
    """Claim (a): the classifier on TRAIN_LANG from the arm's checkpoint (recipes/xnli.sh), zero-shot elsewhere."""
    p = Paths(s.out)
    updates = s.size("GENRE_MAX_UPDATE")
    table = os.path.join(p.runs, "genre", f"table.{arm}.s{seed}.md")
    env = dict(OMP_NUM_THREADS="1", WORK=os.path.join(p.runs, "genre"), SUBDIR="genre", RUN=f"{arm}-s{seed}",
               TABLE=table, LANGS=",".join(s.langs), TRAIN_LANGS=s.train_lang, ARCH="xlm_tiny", LR=s.genre_lr,
               BATCH="8", MAX_UPDATE=str(updates), EPOCH_SIZE="-1", MAX_EPOCH="0",
               VALIDATE_EVERY=str(_every(updates, 3)), DEVICE_FLAGS=" ".join(s.device_flags), EXTRA=f"--seed {seed}",
               PYTHON=s.python)
    log.run(["bash", os.path.join(s.root, "recipes", "xnli.sh"), "--stage", "3", s.out, p.ckpt(arm, seed)], env=env)
    values = gather.genre_measures(table, [s.train_lang] + genre_eval_langs(s))
    gather.write_records(os.path.join(p.results, f"a.{arm}.s{seed}.tsv"), gather.records_of("a", arm, seed, values))


def mt_job(log: JobLog, s: Settings, claim: str, arm: str, seed: int) -> None:
    """Claims (b) supervised (MT steps) and (c) unsupervised (AE + BT steps) MT from the arm's checkpoint
    (recipes/umt.sh), then test BLEU of both directions with checkpoint_best.pt (best valid BLEU, the authors'
    selection) and whether the output depends on the source."""
    p = Paths(s.out)
    l1, l2 = s.pair_langs
    folder = os.path.join(p.runs, f"mt-{claim}", arm, f"s{seed}")
    if claim == "b":
        updates = s.size("MT_MAX_UPDATE")
        steps = dict(MT_STEPS=f"{l1}-{l2},{l2}-{l1}", AE_STEPS="", BT_STEPS="")
    else:
        updates = s.size("UMT_MAX_UPDATE")
        steps = dict(MT_STEPS="", AE_STEPS=f"{l1},{l2}", BT_STEPS=f"{l1}-{l2}-{l1},{l2}-{l1}-{l2}",
                     LAMBDA_AE=f"0:1,{updates // 8 + 1}:0.1")
    os.makedirs(folder, exist_ok=True)
    env = dict(steps, PYTHON=s.python, USER_DIR=s.user_dir, DATABIN=s.out, SAVE=folder, PRETRAINED=p.ckpt(arm, seed),
               ARCH="xlm_tiny", L1=l1, L2=l2, LANGS=",".join(s.langs), MAX_TOKENS="1500", MAX_UPDATE=str(updates),
               LR=s.mt_lr, WARMUP="200", VALID_EVERY=str(_every(updates, 4)),
               EXTRA=" ".join(s.device_flags) + f" --dropout 0.1 --attention-dropout 0 --seed {seed} "
                                                 "--log-format simple --log-interval 50")
    log.run(["bash", os.path.join(s.root, "recipes", "umt.sh"), "--stage", "3", "--stop-stage", "3"], env=env,
            tee=os.path.join(folder, "train.log"))
    records = []
    for src, tgt in ((l1, l2), (l2, l1)):
        table = os.path.join(folder, f"bleu.{src}-{tgt}.md")
        log.run(["bash", os.path.join(s.root, "recipes", "evaluate_mt.sh"), s.out,
                 os.path.join(folder, "checkpoint_best.pt"), src, tgt],
                env=dict(SPLIT="test", BEAM="1", PYTHON=s.python, USER_DIR=s.user_dir), stdout=table)
        records += gather.records_of(claim, arm, seed, gather.bleu_measures(table, f"{src}-{tgt}"))
    # Does the output depend on the source? The share beating a copy of the source, and the BLEU the source
    # explains: at small budgets a decoder can write fluent target text that ignores the encoder, and plain BLEU
    # cannot tell it from translation. The source of one direction is the (decoded) reference of the other.
    for src, tgt in ((l1, l2), (l2, l1)):
        values = gather.copy_measures(os.path.join(folder, f"hyp.test.{src}-{tgt}.beam1.{tgt}"),
                                      os.path.join(folder, f"ref.test.{tgt}-{src}.{src}"),
                                      os.path.join(folder, f"ref.test.{src}-{tgt}.{tgt}"), f"{src}-{tgt}")
        records += gather.records_of(claim, arm, seed, values)
    gather.write_records(os.path.join(p.results, f"{claim}.{arm}.s{seed}.tsv"), records)


def ppl_job(log: JobLog, s: Settings, arm: str, seed: int) -> None:
    """Claim (d): LOW's test perplexity of the arm's best checkpoint (fairseq-validate)."""
    p = Paths(s.out)
    pre_arm = s.d_objective if arm == low_arms(s)[-1] else arm  # every language: the clm/mlm arm of (a)
    out = os.path.join(p.runs, "ppl", f"{arm}.s{seed}.log")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    log.run([s.python, "-m", "fairseq_cli.validate", s.out, "--user-dir", s.user_dir, "--task", "xlm_pretrain",
             "--path", os.path.join(os.path.dirname(p.ckpt(pre_arm, seed)), "checkpoint_best.pt"), "--valid-subset",
             "test", "--batch-size", "32", "--num-workers", "0", "--log-format", "simple", *s.device_flags,
             "--model-overrides", f"{{'data': '{s.out}'}}"], stdout=out, merge=True)
    values = gather.ppl_measures(out, f"{s.d_objective}_ppl_{s.low}")
    gather.write_records(os.path.join(p.results, f"d.{arm}.s{seed}.tsv"), gather.records_of("d", arm, seed, values))


def retrieval_job(log: JobLog, s: Settings, arm: str, seed: int) -> None:
    """Claim (e): P@1 both ways on PAIR's test split with the arm's encoder (no training)."""
    p = Paths(s.out)
    out = os.path.join(p.runs, "retrieval", f"{arm}.s{seed}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    l1, l2 = s.pair_langs
    log.run([s.python, "-m", "fairseq_xlm.cli.evaluate_retrieval", "--checkpoint", p.ckpt(arm, seed), "--data",
             s.out, "--src", l1, "--tgt", l2, "--split", "test", "--json"], stdout=out)
    values = gather.retrieval_measures(out, (l1, l2))
    gather.write_records(os.path.join(p.results, f"e.{arm}.s{seed}.tsv"), gather.records_of("e", arm, seed, values))


# --------------------------------------------------------------------------------------------- stages
def stage_jobs(s: Settings, n: int, plan_lines: List[PlanLine]) -> List[Job]:
    """The jobs of stage ``n`` (2-6), every arm x seed of the claims that run."""
    runs = {c: r for c, r, _, _ in plan_lines}
    arms = {c: a for c, _, a, _ in plan_lines}
    langs = ",".join(s.langs)
    jobs = []
    for seed in s.seeds:
        if n == 2:
            jobs += [Job(f"pre-clm-s{seed}", pretrain, (s, "clm", seed, langs, "clm", langs)),
                     Job(f"pre-mlm-s{seed}", pretrain, (s, "mlm", seed, langs, "mlm", langs))]
            if (runs["a"] or runs["e"]) and s.pair:
                jobs.append(Job(f"pre-mlm_tlm-s{seed}", pretrain, (s, "mlm_tlm", seed, langs, "mlm",
                                                                   f"{langs},{s.pair}")))
            if runs["d"]:  # LOW alone, then one more language at a time; the last is the clm/mlm arm above
                for arm in low_arms(s)[:-1]:
                    arm_langs = arm.replace("+", ",")
                    jobs.append(Job(f"pre-{arm}-s{seed}", pretrain, (s, arm, seed, arm_langs, s.d_objective,
                                                                     arm_langs)))
            if runs["a"] or runs["b"] or runs["c"] or runs["e"]:
                jobs.append(Job(f"random-s{seed}", random_init, (s, seed)))
        elif n == 3 and runs["a"]:
            jobs += [Job(f"genre-{arm}-s{seed}", genre_job, (s, arm, seed)) for arm in arms["a"]]
        elif n in (4, 5):
            claim = "b" if n == 4 else "c"
            if runs[claim]:
                jobs += [Job(f"mt-{claim}-{arm}-s{seed}", mt_job, (s, claim, arm, seed)) for arm in arms[claim]]
        elif n == 6 and runs["d"]:
            jobs += [Job(f"ppl-{arm}-s{seed}", ppl_job, (s, arm, seed)) for arm in arms["d"]]
    if n == 6 and runs["e"]:
        jobs += [Job(f"retrieval-{arm}-s{seed}", retrieval_job, (s, arm, seed)) for seed in s.seeds
                 for arm in ("random", "mlm", "mlm_tlm")]
    return jobs


def write_report(s: Settings, p: Paths, launcher: Launcher) -> str:
    """Stage 7: OUT/REPLICATION.md and OUT/curves-*.png from the records and the training logs."""
    import platform
    import subprocess

    cpu = subprocess.run(["sh", "-c", "lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1"],
                         capture_output=True, text=True).stdout.strip() or platform.processor()
    times = "".join(f"{n} {open(os.path.join(p.done, f'stage-{n}')).read().strip()}; " for n in range(1, 8)
                    if os.path.isfile(os.path.join(p.done, f"stage-{n}")))
    where = f"{launcher.max_parallel} jobs at once" + ("" if launcher.cluster == "local" else " on SLURM")
    text = (f"Settings: {s.lock_line()}; seeds {','.join(map(str, s.seeds))}. Encoder xlm_tiny (2 layers, d=64); "
            f"one update = one step of one kind.\nCommand: `{s.command()}`.\n"
            f"Machine: {cpu}, {os.cpu_count()} cores, {where}; {time.strftime('%Y-%m-%d', time.gmtime())}.\n"
            f"Wall time per stage (s): {times}")
    l1, l2 = s.pair_langs if s.pair else ("", "")
    plots = [report.plot_curves(s.out, title, pattern, metric) for title, pattern, metric in (
        ("pretraining", "runs/pre/*/s*/train.log", "avg_ppl"),
        ("supervised MT", "runs/mt-b/*/s*/train.log", f"bleu_{l1}_{l2}"),
        ("unsupervised MT", "runs/mt-c/*/s*/train.log", f"bleu_{l1}_{l2}"),
        ("classification", "runs/genre/checkpoints/*/train.log", "accuracy"))]
    path = os.path.join(s.out, "REPLICATION.md")
    write_lines(path, report.build_report(s.out, text, [x for x in plots if x]).rstrip("\n").split("\n"))
    return path


def run(s: Settings, launcher: Launcher, stage: int = 1, stop_stage: int = 7,
        echo: Callable[[str], None] = print) -> Dict[str, List[str]]:
    """The study of ``s`` from ``stage`` to ``stop_stage``: every job is skipped once its stamp exists, other
    settings on the same OUT are refused (jobs.StudyError). Returns {stage: names of the jobs that ran}."""
    p = Paths(s.out)
    for folder in (p.done, p.logs, p.results):
        os.makedirs(folder, exist_ok=True)
    lock_settings(os.path.join(p.runs, "settings"), s.lock_line())
    echo(f"replicate: {s.lock_line()}; seeds {','.join(map(str, s.seeds))}; {launcher.max_parallel} jobs at once "
         f"({launcher.cluster}) -> {s.out}")
    ran: Dict[str, List[str]] = {}
    plan_path = os.path.join(p.results, "plan.tsv")
    for n in range(max(stage, 1), min(stop_stage, 7) + 1):
        echo(f"[replicate {n}/7] {STAGES[n - 1]}")
        t0 = time.monotonic()
        if n == 1:
            log = JobLog(os.path.join(p.logs, "data.log"))
            try:
                data(s, p, log)
            except Exception:
                echo(open(log.path, encoding="utf-8", errors="replace").read()[-3000:])
                raise
            plan_lines = plan(s, p)
        else:
            plan_lines = gather.read_plan(plan_path)
        if 2 <= n <= 6:
            skipped = [f"({c}) {note}" for c, r, _, note in plan_lines if not r and
                       ((n == 3 and c == "a") or (n == 4 and c == "b") or (n == 5 and c == "c"))]
            for line in skipped:
                echo(f"  claim {line}: skipped")
            ran[str(n)] = run_pool(stage_jobs(s, n, plan_lines), p.done, p.logs, launcher, echo)
        elif n == 7:
            write_report(s, p, launcher)
        stamp = os.path.join(p.done, f"stage-{n}")
        before = float(open(stamp).read()) if os.path.isfile(stamp) else 0.0
        write_lines(stamp, [str(round(time.monotonic() - t0 + before))])
    if stop_stage >= 7:
        echo(f"(written to {os.path.join(s.out, 'REPLICATION.md')})")
    return ran
