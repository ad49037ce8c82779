"""make replicate: the statistics on hand-made numbers (closed forms as the oracle), the records and the report
on hand-made files, and the whole study in its smoke settings (the table is produced and well-formed)."""

import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fairseq_xlm import paired
from fairseq_xlm.cli import replicate
from fairseq_xlm.cli.bleu import table_lines

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------- statistics
def test_mean_and_sample_std():
    assert paired.mean_std([2.0, 4.0, 9.0]) == pytest.approx((5.0, math.sqrt(13.0)))
    assert paired.mean_std([7.5]) == (7.5, 0.0)
    with pytest.raises(ValueError):
        paired.mean_std([])


def test_paired_t_matches_the_closed_form_of_two_degrees_of_freedom():
    # differences 1, 2, 2: mean 5/3, sd sqrt(1/3), se 1/3, t = 5. With 2 dof the t CDF is
    # 1/2 + t / (2 sqrt(2 + t^2)), so p = 1 - t / sqrt(2 + t^2); t_0.975(2) = 4.302653 (printed tables).
    t = paired.paired_t([1.0, 2.0, 3.0], [2.0, 4.0, 5.0])
    assert t.n == 3
    assert t.diff == pytest.approx(5 / 3)
    assert t.p == pytest.approx(1 - 5 / math.sqrt(27), abs=1e-9)
    assert t.half_width == pytest.approx(4.302653 / 3, abs=1e-6)
    # 5 pairs: t_0.975(4) = 2.776445
    t5 = paired.paired_t([0.0] * 5, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert t5.half_width == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), abs=1e-6)
    # a constant non-zero difference is certain; one pair has no interval
    assert paired.paired_t([1.0, 2.0], [2.0, 3.0]).p == 0.0
    one = paired.paired_t([1.0], [3.0])
    assert (one.n, one.diff, one.p) == (1, 2.0, 1.0) and math.isinf(one.half_width)
    with pytest.raises(ValueError):
        paired.paired_t([1.0], [1.0, 2.0])


def test_verdicts_follow_the_better_direction():
    seeds = {"random": {1: 10.0, 2: 11.0, 3: 12.0}, "mlm": {1: 20.0, 2: 22.0, 3: 21.0},
             "tlm": {1: 30.0, 2: 33.0, 3: 31.0}}
    verdict, texts = paired.comparison("acc_es", ["random", "mlm", "tlm"], seeds)
    assert verdict == "holds" and len(texts) == 2 and texts[0].startswith("mlm vs random: +10.0 [")
    # the same numbers as perplexities: lower is better, so the expected order is reversed
    assert paired.comparison("ppl_ny", ["random", "mlm", "tlm"], seeds)[0] == "no"
    assert paired.comparison("ppl_ny", ["tlm", "mlm", "random"], seeds)[0] == "holds"
    # ordered means with an interval that includes 0
    noisy = {"a": {1: 10.0, 2: 20.0, 3: 10.0}, "b": {1: 20.0, 2: 10.0, 3: 12.0}}
    assert paired.comparison("bleu_en_es", ["a", "b"], noisy)[0] == "holds in the means"
    assert paired.comparison("bleu_en_es", ["a", "c"], noisy)[0] == "incomplete"


# ---------------------------------------------------------------------------------- records, report
def write(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{r}\n" for r in rows), encoding="utf-8")


def table_of(text: str, heading: str):
    """{measure: cells} of the markdown table under ``heading``."""
    part = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in part.splitlines()
            if line.startswith("|")]
    assert rows and rows[1][0].startswith("---"), part
    assert all(len(r) == len(rows[0]) for r in rows), part
    return rows[0], {r[0]: r for r in rows[2:]}


def test_report_from_hand_made_records(tmp_path):
    res = tmp_path / "results"
    write(res / "plan.tsv", ["a\trun\trandom,mlm,mlm_tlm\tTrained on en.", "b\tskipped\trandom,clm,mlm\tno pair",
                             "d\trun\tny,ny+en\t"])
    acc = {"random": (13.0, 14.0, 12.0), "mlm": (30.0, 31.0, 35.0), "mlm_tlm": (40.0, 42.0, 41.0)}
    write(res / "a.tsv", [f"a\tacc_es\t{arm}\t{s + 1}\t{v}" for arm, vals in acc.items() for s, v in enumerate(vals)])
    write(res / "d.tsv", ["d\tppl_ny\tny\t1\t300", "d\tppl_ny\tny\t2\t310", "d\tppl_ny\tny+en\t1\t250",
                          "d\tppl_ny\tny+en\t2\t255"])
    text = replicate.build_report(str(tmp_path), "Settings: test")
    header, rows = table_of(text, "## (a)")
    assert header[:5] == ["measure", "better", "random", "mlm", "mlm_tlm"]
    assert rows["acc_es"][2] == "13.0 ± 1.00 (3)" and rows["acc_es"][4] == "41.0 ± 1.00 (3)"
    assert rows["acc_es"][5] == "holds"
    _, rows = table_of(text, "## (d)")
    assert rows["ppl_ny"][1] == "lower" and rows["ppl_ny"][4] == "holds"  # 255 < 310 and 250 < 300 every time
    assert "**Skipped**: no pair." in text and "Paper: XNLI zero-shot accuracy 71.5" in text

    write(res / "bad.tsv", ["a\tacc_es\tmlm\tone\t3"])
    with pytest.raises(ValueError, match=r"bad\.tsv:1: expected"):
        replicate.build_report(str(tmp_path))


def test_record_kinds_read_the_files_the_recipes_write(tmp_path):
    table = tmp_path / "bleu.md"
    write(table, table_lines("greedy, max len 1.5*len+10 (authors')", {"bleu": 3.25, "tok_bleu": 4.5}))
    assert replicate.bleu_measures(str(table), "en-es") == {"bleu_en_es": 3.25, "tok_bleu_en_es": 4.5}
    genre = tmp_path / "table.md"
    write(genre, ["| model | en | es | ny | avg |", "|---|---:|---:|---:|---:|",
                  "| mlm-s1 | 60.0 | 40.5 | 30.25 | 0 |"])
    assert replicate.genre_measures(str(genre), ["es", "ny"]) == {"acc_es": 40.5, "acc_ny": 30.25}
    with pytest.raises(ValueError, match="no column for"):
        replicate.genre_measures(str(genre), ["fr"])
    out = tmp_path / "r" / "a.tsv"
    replicate.main(["record", "--out", str(out), "--claim", "a", "--arm", "mlm", "--seed", "2", "genre", str(genre),
                    "--langs", "es"])
    assert out.read_text() == "a\tacc_es\tmlm\t2\t40.5\n"
    result = tmp_path / "retrieval.json"  # what python -m fairseq_xlm.cli.evaluate_retrieval --json prints
    result.write_text('{"src": "en", "tgt": "es", "n": 8, "p_at_1_src_tgt": 0.25, "p_at_1_tgt_src": 0.5}\n')
    replicate.main(["record", "--out", str(out), "--claim", "e", "--arm", "mlm", "--seed", "1", "retrieval",
                    str(result)])
    assert out.read_text() == "e\tp1_en_es\tmlm\t1\t25\ne\tp1_es_en\tmlm\t1\t50\n"
    result.write_text('{"src": "en"}')
    with pytest.raises(SystemExit):
        replicate.main(["record", "--out", str(out), "--claim", "e", "--arm", "mlm", "--seed", "1", "retrieval",
                        str(result)])


def test_beats_copy_share():
    refs = ["the cat sat on the mat", "a dog runs in the park"]
    srcs = ["el gato se sentó en la alfombra", "un perro corre en el parque"]
    assert replicate.beats_copy_share(refs, srcs, refs) == 100.0
    assert replicate.beats_copy_share(srcs, srcs, refs) == 0.0  # copying never beats copying
    assert replicate.beats_copy_share([refs[0], srcs[1]], srcs, refs) == 50.0
    with pytest.raises(ValueError):
        replicate.beats_copy_share(refs[:1], srcs, refs)


def test_bleu_over_shifted_is_the_bleu_the_source_explains(tmp_path):
    refs = ["the cat sat on my mat", "a dog runs in one park", "birds sing loudly every single morning"]
    # perfect translations: 100 against their references, 0 against the shifted ones (no shared n-gram)
    assert replicate.bleu_over_shifted(refs, refs) == pytest.approx(100.0)
    # one output whatever the input: corpus BLEU's sums are the same for any pairing, so exactly 0
    constant = ["the dog sat in one park"] * 3
    assert replicate.bleu_over_shifted(constant, refs) == pytest.approx(0.0, abs=1e-9)
    # outputs that fit the next sentence's reference: the source explains less than nothing
    assert replicate.bleu_over_shifted(refs[1:] + refs[:1], refs) == pytest.approx(-100.0)
    with pytest.raises(ValueError, match="needs >= 2 pairs"):
        replicate.bleu_over_shifted(refs[:1], refs[:1])
    with pytest.raises(ValueError, match="2 hypotheses, 3 references"):
        replicate.bleu_over_shifted(refs[:2], refs)
    paths = {}
    for name, lines in (("hyp", refs), ("src", ["x y z"] * 3), ("ref", refs)):
        paths[name] = tmp_path / name
        write(paths[name], lines)
    out = tmp_path / "copy.tsv"
    replicate.main(["record", "--out", str(out), "--claim", "b", "--arm", "clm", "--seed", "3", "copy",
                    str(paths["hyp"]), str(paths["src"]), str(paths["ref"]), "--direction", "en-es"])
    assert out.read_text() == "b\tbeats_copy_en_es\tclm\t3\t100\nb\tbleu_over_shifted_en_es\tclm\t3\t100\n"


def test_label_raw_trains_on_one_language_and_tests_the_labelled_others(tmp_path):
    raw = tmp_path / "raw"
    write(raw / "train.en", ["a", "b"])
    write(raw / "train.en.label", ["Law", "Acts"])
    for lang in ("en", "es"):
        for split in ("valid", "test"):
            write(raw / f"{split}.{lang}", [f"{lang} {split}"])
            write(raw / f"{split}.{lang}.label", ["Poetry"])
    write(raw / "test.ny", ["no labels"])
    out = tmp_path / "out"
    assert replicate.label_raw(str(raw), str(out), "en", ["en", "es", "ny"]) == ["en", "es"]
    assert (out / "labels.txt").read_text().split() == ["Acts", "Law", "Poetry"]
    assert (out / "test.es.input0").read_text() == "es test\n" and not (out / "train.es.input0").exists()
    write(raw / "valid.es.label", ["Poetry", "Law"])
    with pytest.raises(ValueError, match=r"valid\.es\.label: 2 labels for 1 lines"):
        replicate.label_raw(str(raw), str(out), "en", ["es"])
    with pytest.raises(ValueError, match=r"train\.es\.label: missing"):
        replicate.label_raw(str(raw), str(out), "es", ["en"])


# ------------------------------------------------------------------------------------ the whole study
def run_recipe(env, *args, timeout=600):
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(REPO / "recipes" / "replicate.sh"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    return proc, time.monotonic() - t0


# make test runs claims (a) and (d) (about 45 processes); REPLICATE_ALL_CLAIMS=1 adds the MT claims (b) and (c)
ALL_CLAIMS = os.environ.get("REPLICATE_ALL_CLAIMS") == "1"


def test_smoke_study_writes_a_well_formed_table_and_reuses_finished_arms(tmp_path):
    from fairseq_xlm.cli.bible import default_tsv

    if not os.path.isfile(default_tsv()):
        pytest.skip(f"Bible corpus not found at {default_tsv()} (set XLM_BIBLE_TSV)")
    out = tmp_path / "study"
    env = dict(os.environ, SMOKE="1", OUT=str(out), PYTHON=sys.executable)
    if ALL_CLAIMS:
        env["SMOKE_CLAIMS"] = "a,b,c,d,e"
    first, _ = run_recipe(env, timeout=3600 if ALL_CLAIMS else 1200)  # shared machines run it far slower
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    text = (out / "REPLICATION.md").read_text(encoding="utf-8")
    arms = {"a": ["random", "clm", "mlm", "mlm_tlm"], "b": ["random", "clm", "mlm"], "c": ["random", "clm", "mlm"],
            "d": ["ny", "ny+en", "ny+en+es"], "e": ["random", "mlm", "mlm_tlm"]}
    measures = {"a": {"acc_en", "acc_es", "acc_ny"}, "b": {"bleu_en_es", "tok_bleu_en_es", "bleu_es_en",
                                                           "tok_bleu_es_en"},
                "d": {"ppl_ny"}, "e": {"p1_en_es", "p1_es_en"}}
    measures["b"] |= {"beats_copy_en_es", "beats_copy_es_en", "bleu_over_shifted_en_es", "bleu_over_shifted_es_en"}
    measures["c"] = measures["b"]
    for claim in "abcde":
        if claim in "bc" and not ALL_CLAIMS:
            assert "**Skipped**: not selected (CLAIMS=a,d,e)." in text.split(f"## ({claim})")[1].split("## (")[0]
            continue
        header, rows = table_of(text, f"## ({claim})")
        assert header[2:-2] == arms[claim]
        assert set(rows) == measures[claim], claim
        for name, row in rows.items():
            for cell in row[2:-2]:  # every arm has both seeds
                assert re.fullmatch(r"-?[0-9.]+ ± [0-9.]+ \(2\)", cell), (claim, name, cell)
            assert row[-2] in ("holds", "holds in the means", "no"), row
    assert "SMOKE=1 recipes/replicate.sh" in text

    again, seconds = run_recipe(env, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "started" not in again.stdout and seconds < 30
    assert (out / "REPLICATION.md").read_text(encoding="utf-8").split("Wall time")[1].count("\n") == \
        text.split("Wall time")[1].count("\n")
    changed, _ = run_recipe(dict(env, PRE_UPDATES="9"), timeout=60)
    assert changed.returncode == 1 and "made with other settings" in changed.stderr


def test_bad_settings_are_refused_before_anything_runs(tmp_path):
    env = dict(os.environ, SMOKE="1", OUT=str(tmp_path / "s"), PYTHON=sys.executable)
    for extra, message in (({"PAIR": "en-fr"}, "fr is not in LANGS"), ({"LOW": "xx"}, "LOW=xx is not in LANGS"),
                           ({"SEEDS": "1,a", "SMOKE_SEEDS": "1,a"}, "SEEDS=1,a"),
                           ({"PRE_MAX_UPDATE": "many"}, "not a positive integer")):
        proc, _ = run_recipe(dict(env, **extra), timeout=30)
        assert proc.returncode == 2 and message in proc.stderr, (extra, proc.stderr)
    proc, _ = run_recipe(env, str(tmp_path / "missing"), timeout=30)
    assert proc.returncode == 1 and "is not a folder" in proc.stderr
    assert not (tmp_path / "s").exists()
