"""Learning curves from fairseq's logs (python -m fairseq_xlm.cli.curves) on a hand-made log whose numbers are
known, and fairseq's --tensorboard-logdir with our per-language metrics on a real tiny training run."""

import glob
import re
import struct

import numpy as np
import pytest

from fairseq_xlm.cli import curves
from test_pretrain_e2e import logged, train_args

LINE = "2026-01-01 10:00:00 | INFO | {tag} | epoch 001 | valid on '{subset}' subset | loss 7.8 | {metrics} | wps 0"


def write_log(path, rows):
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return str(path)


def hand_made_log(path, scale=1.0):
    """Three validations (one repeated at update 200, the later value counts), a test line and training lines."""
    v = lambda n, en, es: LINE.format(tag="valid", subset="valid",  # noqa: E731
                                      metrics=f"mlm_ppl_en {en * scale} | mlm_ppl_es {es * scale} | num_updates {n}")
    return write_log(path, [
        "2026-01-01 10:00:00 | INFO | train_inner | epoch 001:  100 / 900 loss=9, mlm_ppl_en=500, num_updates=100",
        v(100, 400.5, 420), v(200, 300, 310), v(200, 250.25, 260), "[xlm] " + v(300, 1.5e2, 1.6e+2),
        LINE.format(tag="test", subset="test", metrics="mlm_ppl_en 1 | num_updates 300"),
        "2026-01-01 10:00:00 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 7.8 | mlm_ppl_en 9 | wps 0",
    ])


def test_validations_and_series_from_a_hand_made_log(tmp_path):
    rows = curves.read_validations(hand_made_log(tmp_path / "train.log"))
    assert [r["num_updates"] for r in rows] == [100, 200, 200, 300]  # the line without num_updates is skipped
    assert curves.series(rows, "mlm_ppl_en") == ([100, 200, 300], [400.5, 250.25, 150.0])
    assert curves.series(rows, "mlm_ppl_es") == ([100, 200, 300], [420.0, 260.0, 160.0])
    assert curves.series(rows, "bleu_en_es") == ([], [])
    assert curves.read_validations(str(tmp_path / "train.log"), "test") == [{"loss": 7.8, "mlm_ppl_en": 1.0,
                                                                             "num_updates": 300.0, "wps": 0.0}]


def test_plot_writes_a_png_with_one_line_per_run_and_metric(tmp_path, monkeypatch):
    import matplotlib.image
    import matplotlib.pyplot as plt

    runs = {"pretrained": hand_made_log(tmp_path / "a.log"), "random init": hand_made_log(tmp_path / "b.log", 10)}
    drawn = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (drawn.extend(fig.axes[0].get_lines()), real_close(fig)))
    out = curves.plot(runs, ["mlm_ppl_en", "mlm_ppl_es"], str(tmp_path / "c.png"), "t", "perplexity", log_y=True)
    assert [(line.get_label(), line.get_linestyle(), list(line.get_ydata())) for line in drawn] == [
        ("mlm_ppl_en (pretrained)", "-", [400.5, 250.25, 150.0]), ("mlm_ppl_es (pretrained)", "-", [420, 260, 160]),
        ("mlm_ppl_en (random init)", "--", [4005, 2502.5, 1500]),
        ("mlm_ppl_es (random init)", "--", [4200, 2600, 1600])]
    assert drawn[0].get_color() == drawn[2].get_color() != drawn[1].get_color()  # one colour per metric
    image = matplotlib.image.imread(out)
    assert image.shape[:2] == (380, 640) and image.std() > 0.05  # drawn, not blank
    assert not glob.glob(str(tmp_path / "*.tmp*"))


def test_cli_and_bad_input(tmp_path, capsys):
    log = hand_made_log(tmp_path / "train.log")
    assert curves.main([f"run={log}", "--metrics", "mlm_ppl_en", "--out", str(tmp_path / "x.png")]) == [
        str(tmp_path / "x.png")]
    for argv, message in [([f"run={tmp_path}/nope.log", "--metrics", "a", "--out", "y.png"], "nope.log: no such log"),
                          ([log, "--metrics", "a", "--out", "y.png"], "expected RUN=LOG"),
                          ([f"run={log}", "--metrics", "bleu_en_es", "--out", "y.png"], "none of the metrics"),
                          ([f"run={write_log(tmp_path / 'e.log', ['no validation'])}", "--metrics", "a", "--out",
                            "y.png"], "no \"valid on 'valid' subset"),
                          (["--metrics", "a"], "give RUN=LOG")]:
        with pytest.raises(SystemExit) as exit_info:
            curves.main(argv)
        assert exit_info.value.code == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "y.png").exists()


def tensorboard_scalars(logdir):
    """{(run, tag): [(step, value)]} of tensorboard event files, read as TFRecords of Event protos."""
    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    out = {}
    for path in glob.glob(f"{logdir}/*/events.out.tfevents.*"):
        run = path.split("/")[-2]
        with open(path, "rb") as f:
            while header := f.read(12):  # length (8 bytes) + its CRC (4)
                data = f.read(struct.unpack("<Q", header[:8])[0])
                f.read(4)  # the data's CRC
                event = event_pb2.Event.FromString(data)
                for value in event.summary.value:
                    if value.HasField("simple_value"):
                        out.setdefault((run, value.tag), []).append((event.step, value.simple_value))
    return out


def test_tensorboard_logdir_records_per_language_metrics(bible_databin, pkg_dir, run_fairseq, tmp_path):
    pytest.importorskip("tensorboardX")
    out = run_fairseq("fairseq_cli.train", train_args(
        bible_databin, tmp_path / "ckpt", pkg_dir, "--mlm-steps", "en,es,en-es", "--max-update", "3",
        "--validate-interval-updates", "3", "--best-checkpoint-metric", "avg_ppl", "--log-format", "simple",
        "--tensorboard-logdir", tmp_path / "tb", "--no-save")).stdout
    scalars = tensorboard_scalars(tmp_path / "tb")
    valid = [line for line in out.splitlines() if "valid on 'valid' subset" in line][-1]
    for metric in ("mlm_ppl_en", "mlm_ppl_es", "tlm_ppl_en-es", "avg_ppl"):
        step, value = scalars[("valid", metric)][-1]
        assert step == 3 and value == pytest.approx(logged(valid, metric)[0], abs=0.01), metric
    assert {tag for run, tag in scalars if run == "train_inner"} >= {"mlm_ppl_en", "loss"}
    # the same log draws as a learning curve
    (tmp_path / "train.log").write_text(out)
    rows = curves.read_validations(str(tmp_path / "train.log"))
    assert curves.series(rows, "mlm_ppl_es")[0] == [3]
    assert np.isclose(curves.series(rows, "mlm_ppl_es")[1][0], scalars[("valid", "mlm_ppl_es")][-1][1], atol=0.01)
    assert re.search(r"num_updates 3\b", valid)
