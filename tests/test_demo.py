"""make demo: the shipped Bible sample (small, chapter-disjoint, reproducible from its documented command), the
demo helpers on hand-made input, and the whole pipeline in its smoke settings run twice (the second run
skips every stage)."""

import contextlib
import gzip
import io
import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import preload
import pytest

from fairseq_xlm.cli import demo

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "bible-sample"
# Genres by book number, typed from shared/data/README.md (not from fairseq_xlm.cli.bible: an independent oracle).
BOOK_GENRE = {**{b: "Law" for b in range(1, 6)}, **{b: "History" for b in range(6, 18)},
              **{b: "Poetry" for b in range(18, 23)}, **{b: "Prophets" for b in range(23, 40)},
              **{b: "Gospels" for b in range(40, 44)}, 44: "Acts", **{b: "Letters" for b in range(45, 66)},
              66: "Revelation"}


def lines(path: Path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


# ------------------------------------------------------------------------------------------- sample
def test_sample_is_small_aligned_labelled_and_chapter_disjoint():
    files = sorted(SAMPLE.glob("*.gz"))
    assert sum(f.stat().st_size for f in files) < 2_000_000
    chapters = {}
    for split, n_mono, n_para in (("train", 5000, 2000), ("valid", 300, 200), ("test", 500, 500)):
        for name, n in ((f"{split}.en", n_mono), (f"{split}.es", n_mono), (f"{split}.en-es", n_para)):
            ids = lines(SAMPLE / f"{name}.id.gz")
            assert len(ids) == n and len(set(ids)) == n, name
            assert all(re.fullmatch(r"\d\d\.\d{3}\.\d{3}", i) for i in ids)
            chapters[name] = {i.rsplit(".", 1)[0] for i in ids}
            if "-" in name:
                sides = [lines(SAMPLE / f"{name}.{lang}.gz") for lang in ("en", "es")]
                assert all(len(s) == n and all(t.strip() for t in s) for s in sides), name
            else:
                assert len(lines(SAMPLE / f"{name}.gz")) == n
                labels = lines(SAMPLE / f"{name}.label.gz")
                assert labels == [BOOK_GENRE[int(i[:2])] for i in ids], name
    names = list(chapters)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            assert not chapters[names[a]] & chapters[names[b]], (names[a], names[b])
    # a slice spread over the whole Bible: the training verses cover every genre
    assert set(lines(SAMPLE / "train.en.label.gz")) == set(BOOK_GENRE.values())


def documented_command():
    """The fairseq_xlm.cli.bible command line of data/bible-sample/README.md, as argv."""
    text = (SAMPLE / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    command = re.search(r"python -m fairseq_xlm\.cli\.bible(.*?)(?<!\\)\n", block, re.S).group(1)
    return shlex.split(command.replace("\\\n", " "))


def test_sample_is_what_the_documented_command_writes(run_fairseq, tmp_path):
    from fairseq_xlm.cli.bible import default_tsv

    tsv = default_tsv()
    if not os.path.isfile(tsv):
        pytest.skip(f"Bible corpus not found at {tsv} (set XLM_BIBLE_TSV)")
    argv = documented_command()
    argv[argv.index("--out") + 1] = str(tmp_path)
    run_fairseq("fairseq_xlm.cli.bible", argv + ["--tsv", tsv])
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == sorted(p.name[:-3] for p in SAMPLE.glob("*.gz"))
    for name in made:
        assert (tmp_path / name).read_text(encoding="utf-8").split("\n")[:-1] == lines(SAMPLE / f"{name}.gz"), name


# ------------------------------------------------------------------------------------------ helpers
def write(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{r}\n" for r in rows), encoding="utf-8")


def test_genre_raw_trains_on_one_language_and_tests_every_language_on_the_same_verses(tmp_path):
    raw = tmp_path / "raw"
    write(raw / "train.en", ["In the beginning", "Blessed is the man", "Paul, a servant"])
    write(raw / "train.en.label", ["Law", "Poetry", "Letters"])
    write(raw / "train.es", ["no usado"])  # Spanish monolingual text: never a training example
    ids = {"valid": ["19.001.001", "44.002.003"], "test": ["01.001.001", "40.002.003", "66.001.001"]}
    for split, split_ids in ids.items():
        write(raw / f"{split}.en-es.id", split_ids)
        write(raw / f"{split}.en-es.en", [f"en {i}" for i in split_ids])
        write(raw / f"{split}.en-es.es", [f"es {i}" for i in split_ids])
    out = tmp_path / "out"
    counts = demo.genre_raw(str(raw), str(out), "en", ("en", "es"))
    assert counts == {"train.en": 3, "valid.en": 2, "valid.es": 2, "test.en": 3, "test.es": 3}
    assert not (out / "train.es.input0").exists()
    assert (out / "test.es.input0").read_text().split("\n")[:-1] == [f"es {i}" for i in ids["test"]]
    for lang in ("en", "es"):
        assert (out / f"test.{lang}.label").read_text().split("\n")[:-1] == ["Law", "Gospels", "Revelation"]
        assert (out / f"valid.{lang}.label").read_text().split("\n")[:-1] == ["Poetry", "Acts"]
    assert (out / "train.en.label").read_text().split("\n")[:-1] == ["Law", "Poetry", "Letters"]
    assert (out / "labels.txt").read_text().split() == ["Law", "History", "Poetry", "Prophets", "Gospels", "Acts",
                                                         "Letters", "Revelation"]
    write(raw / "test.en-es.es", ["only one line"])
    with pytest.raises(ValueError, match=r"test\.en-es\.es: 1 lines but 3 verse ids"):
        demo.genre_raw(str(raw), str(out), "en", ("en", "es"))


FAIRSEQ_LINE = ("2026-01-01 10:00:00 | INFO | {tag} | valid on '{subset}' subset | loss 7.8 | mlm_loss_en 7.8 | "
                "{metrics} | wps 0 | wpb 71417 | bsz 765")


def fake_demo(root: Path, xlm_ppl, random_ppl, bleu, acc):
    """The files a finished demo leaves in root/runs, with the given numbers."""
    ev = root / "runs" / "eval"
    for run, (en, es, tlm) in (("xlm", xlm_ppl), ("random", random_ppl)):
        write(ev / f"ppl.{run}.log", [
            FAIRSEQ_LINE.format(tag="valid", subset="valid", metrics="mlm_ppl_en 1 | mlm_ppl_es 1 | tlm_ppl_en-es 1"),
            FAIRSEQ_LINE.format(tag="test", subset="test",
                                metrics=f"mlm_ppl_en {en} | mlm_ppl_es {es} | tlm_ppl_en-es {tlm}")])
        for i, (src, tgt) in enumerate((("en", "es"), ("es", "en"))):
            write(ev / f"bleu.{run}.{src}-{tgt}", [bleu[run][i]])
            write(ev / f"mtppl.{run}.{src}-{tgt}.log",
                  [FAIRSEQ_LINE.format(tag="test", subset="test", metrics=f"ppl {100 + i + (run == 'random')}")])
        p1 = {"xlm": (0.5, 0.25), "random": (0.125, 0.0625)}[run]
        write(ev / f"retrieval.{run}.json", [json.dumps({"src": "en", "tgt": "es", "n": 8, "p_at_1_src_tgt": p1[0],
                                                         "p_at_1_tgt_src": p1[1]})])
        write(root / "runs" / "genre" / f"table.{run}.md",
              ["| model | en | es | avg |", "|---|---:|---:|---:|", f"| {run} | {acc[run][0]} | {acc[run][1]} | 0 |"])
    raw = root / "runs" / "genre" / "raw-genre"
    write(raw / "train.en.label", ["Law", "Law", "Poetry"])
    write(raw / "test.en.label", ["Law", "Acts", "Acts", "Law"])
    write(raw / "test.es.label", ["Law", "Acts", "Acts", "Law"])
    write(root / "runs" / "done" / "3-pretrain", ["61"])
    write(root / "runs" / "done" / "1-unpack", ["1"])


def table_rows(text: str):
    """{measure: (xlm, random)} of the results table."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[4] in ("lower", "higher"):
            rows[cells[0]] = (float(cells[2]), float(cells[3]))
    return rows


def test_report_puts_each_number_next_to_its_baseline(tmp_path):
    fake_demo(tmp_path, (150.25, 170.5, 120.0), (3001.0, 3002.0, 3003.0),
              {"xlm": ["1.23", "0.5"], "random": ["0.1", "0"]}, {"xlm": (60.2, 35.0), "random": (50.0, 20.0)})
    text = demo.build_report(str(tmp_path), ["en", "es"], "en",
                             {"vocab": 3000, "beam": 5, "pretrain_updates": 4000, "umt_updates": 500,
                              "genre_updates": 3000})
    assert table_rows(text) == {
        "MLM perplexity en": (150.2, 3001.0), "MLM perplexity es": (170.5, 3002.0),
        "TLM perplexity en-es": (120.0, 3003.0),
        "BLEU en→es (beam 5)": (1.23, 0.1), "BLEU es→en (beam 5)": (0.5, 0.0),
        "translation perplexity en→es": (100.0, 101.0), "translation perplexity es→en": (101.0, 102.0),
        "retrieval P@1 en→es, %": (50.0, 12.5), "retrieval P@1 es→en, %": (25.0, 6.2),
        "genre accuracy en (trained on it), %": (60.2, 50.0), "genre accuracy es (zero-shot), %": (35.0, 20.0)}
    assert "pretraining for 4000 updates" in text and "(Law) scores 50.0% (en), 50.0% (es)" in text
    assert "| 3-pretrain | 61 |" in text and "| total | 62 |" in text
    path = demo.write_report(str(tmp_path), text)
    assert Path(path).read_text(encoding="utf-8") == text and not list(tmp_path.glob("*.tmp*"))

    (tmp_path / "runs" / "eval" / "bleu.random.es-en").unlink()
    with pytest.raises(FileNotFoundError, match=r"bleu\.random\.es-en: missing"):
        demo.build_report(str(tmp_path), ["en", "es"])
    write(tmp_path / "runs" / "eval" / "bleu.random.es-en", ["Traceback (most recent call last):"])
    with pytest.raises(ValueError, match=r"bleu\.random\.es-en: expected one number"):
        demo.build_report(str(tmp_path), ["en", "es"])
    write(tmp_path / "runs" / "eval" / "bleu.random.es-en", ["0.5"])
    write(tmp_path / "runs" / "eval" / "retrieval.xlm.json", ['{"src": "en", "tgt": "fr"}'])
    with pytest.raises(ValueError, match=r"retrieval\.xlm\.json: no en-es result"):
        demo.build_report(str(tmp_path), ["en", "es"])


def test_report_table_comes_from_the_gathered_records(tmp_path, monkeypatch):
    """The demo's numbers go through make replicate's gathering (readers, records, collect): the records file
    the report leaves holds every number of the table, and the study's report reads it as one of its own."""
    from fairseq_xlm.cli.study import gather, report

    fake_demo(tmp_path, (150.25, 170.5, 120.0), (3001.0, 3002.0, 3003.0),
              {"xlm": ["1.23", "0.5"], "random": ["0.1", "0"]}, {"xlm": (60.2, 35.0), "random": (50.0, 20.0)})
    monkeypatch.setattr("fairseq_xlm.cli.curves.demo_figures", lambda directory: [])  # no training logs here
    with contextlib.redirect_stdout(io.StringIO()):
        demo.main(["report", "--dir", str(tmp_path), "--beam", "5"])
    rows = table_rows((tmp_path / "RESULTS.md").read_text(encoding="utf-8"))
    data = gather.collect(gather.read_records([str(tmp_path / "results" / "demo.tsv")]))["demo"]
    measure_of = {"MLM perplexity en": ("mlm_ppl_en", 1), "TLM perplexity en-es": ("tlm_ppl_en-es", 1),
                  "BLEU en→es (beam 5)": ("bleu_en_es", 2), "translation perplexity es→en": ("mt_ppl_es_en", 1),
                  "retrieval P@1 es→en, %": ("p1_es_en", 1), "genre accuracy es (zero-shot), %": ("acc_es", 1)}
    for row, (measure, digits) in measure_of.items():
        assert rows[row] == tuple(float(f"{data[measure][run][1]:.{digits}f}") for run in ("xlm", "random")), row
    assert len(data) == len(rows)
    write(tmp_path / "results" / "plan.tsv", ["demo\trun\trandom,xlm\tthe demo as a one-seed study"])
    text = report.build_report(str(tmp_path))
    assert "| acc_es | higher | 20.0 ± 0.00 (1) | 35.0 ± 0.00 (1) | holds in the means |" in text
    assert "| mlm_ppl_en | lower | 3001.0 ± 0.00 (1) | 150.2 ± 0.00 (1) | holds in the means |" in text


# ------------------------------------------------------------------------------------ the pipeline
def run_demo(env, *args, timeout=300):
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(REPO / "recipes" / "demo.sh"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    return proc, time.monotonic() - t0


def test_smoke_demo_end_to_end_then_a_second_run_reuses_every_stage(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, DEMO_SMOKE="1", OUT=str(out), PYTHON=preload.python())
    for name in ("PRETRAIN_UPDATES", "PRETRAIN_MAX_UPDATE", "FAIRSEQ_XLM_ENV_CHECKED"):
        env.pop(name, None)
    first, seconds = run_demo(env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    log = first.stdout
    for n in range(1, 8):
        assert f"[demo {n}/7]" in log
    # fairseq's own progress lines are shown, those of side-by-side runs prefixed by their run
    assert re.search(r"^\S.* \| train_inner \| .*num_updates=6", log, re.M)  # pretraining
    for run in ("xlm", "random"):
        assert re.search(rf"^\[{run}\] .* \| train_inner \| .*bt_loss_en-es-en", log, re.M)
        assert re.search(rf"^\[{run}\] .*valid on 'valid' subset.*accuracy_es", log, re.M)

    results = (out / "RESULTS.md").read_text(encoding="utf-8")
    assert results in log  # printed at the end
    rows = table_rows(results)
    assert set(rows) == {"MLM perplexity en", "MLM perplexity es", "TLM perplexity en-es", "BLEU en→es (beam 2)",
                         "BLEU es→en (beam 2)", "translation perplexity en→es", "translation perplexity es→en",
                         "retrieval P@1 en→es, %", "retrieval P@1 es→en, %",
                         "genre accuracy en (trained on it), %", "genre accuracy es (zero-shot), %"}
    vocab = sum(1 for _ in open(out / "dict.txt")) + 5  # + <s> <pad> </s> <unk> <mask>
    for name, (xlm, random) in rows.items():
        if "perplexity" in name:
            assert xlm > 1 and random > 1, name
        else:
            assert 0 <= xlm <= 100 and 0 <= random <= 100, name
    for name in ("curves-pretraining.png", "curves-umt.png", "curves-genre.png"):  # learning curves, linked
        assert (out / name).stat().st_size > 10_000 and f"]({name})" in results, name
    # an untrained model predicts nearly uniformly: perplexity close to the vocabulary size
    for name in ("MLM perplexity en", "MLM perplexity es", "TLM perplexity en-es"):
        assert 0.5 * vocab < rows[name][1] < 2 * vocab, (name, vocab)
    # each run starts from its own checkpoint: the random-init one never reads the pretrained one
    umt_logs = {run: (out / "runs" / f"umt-{run}" / "train.log").read_text() for run in ("xlm", "random")}
    for run, ckpt in (("xlm", "pretrain/checkpoint_last.pt"), ("random", "random/checkpoint_init.pt")):
        for part in ("encoder", "decoder"):
            assert f"initialised the {part} from {out}/runs/{ckpt}" in umt_logs[run]
        assert "pretrain/" not in umt_logs["random"]

    checkpoints = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
    assert len(checkpoints) >= 6
    again, again_seconds = run_demo(env, timeout=60)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again_seconds < 15, f"a finished demo took {again_seconds:.1f}s to rerun (first run: {seconds:.0f}s)"
    assert again.stdout.count("skipping") == 7 and "train_inner" not in again.stdout
    assert results in again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")} == checkpoints
    assert (out / "RESULTS.md").read_text(encoding="utf-8") == results

    # other settings on the same folder would mix stale stages: refused
    changed, _ = run_demo(dict(env, PRETRAIN_MAX_UPDATE="7"), timeout=60)
    assert changed.returncode == 1 and "made with other settings" in changed.stderr


def test_bad_arguments_print_usage(tmp_path):
    env = dict(os.environ, DEMO_SMOKE="1", OUT=str(tmp_path / "demo"), PYTHON=preload.python())
    proc, _ = run_demo(env, "--bogus", timeout=30)
    assert proc.returncode == 2 and "usage:" in proc.stderr
    proc, _ = run_demo(dict(env, PRETRAIN_UPDATES="many"), timeout=30)  # the old name still reaches the check
    assert proc.returncode == 2 and "not a positive integer" in proc.stderr
    assert "PRETRAIN_UPDATES is renamed PRETRAIN_MAX_UPDATE" in proc.stderr
    assert not (tmp_path / "demo").exists()


def test_pretraining_batch_shape_is_a_setting(tmp_path):
    """PRETRAIN_BATCH_SIZE / _TOKENS_PER_SAMPLE / _MAX_PAIR_TOKENS are checked and locked with the folder."""
    out = tmp_path / "demo"
    env = dict(os.environ, DEMO_SMOKE="1", OUT=str(out), PYTHON=preload.python())
    proc, _ = run_demo(dict(env, PRETRAIN_TOKENS_PER_SAMPLE="64x"), timeout=30)
    assert proc.returncode == 2 and "64x is not a positive integer" in proc.stderr
    assert not out.exists()
    old = dict(env, PRETRAIN_BATCH_SIZE="16", PRETRAIN_TOKENS_PER_SAMPLE="128", PRETRAIN_MAX_PAIR_TOKENS="128")
    proc, _ = run_demo(old, "--stop-stage", "1", timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ",16x128/128 " in (out / "runs" / "settings").read_text()
    proc, _ = run_demo(env, "--stop-stage", "1", timeout=60)  # the defaults (32 x 64) on that folder: refused
    assert proc.returncode == 1 and "made with other settings" in proc.stderr and ",32x64/128 " in proc.stderr
