"""loss.png: the figure holds exactly the points the Trainer logged; the file is a PNG of that figure."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")

from datakit.train.plot import curve_text, figure, write_plot  # noqa: E402

HISTORY = [{"loss": 2.5, "learning_rate": 1e-4, "epoch": 0.1, "step": 2},
           {"loss": 2.1, "learning_rate": 2e-4, "epoch": 0.2, "step": 4},
           {"eval_loss": 2.3, "eval_runtime": 0.4, "epoch": 0.2, "step": 4},
           {"loss": 1.7, "learning_rate": 1e-4, "epoch": 0.3, "step": 6},
           {"train_loss": 2.1, "train_runtime": 3.0, "epoch": 0.3, "step": 6}]


def test_the_figure_holds_the_logged_points():
    fig = figure(HISTORY, title="run")
    loss_axis, lr_axis = fig.axes
    lines = {line.get_label(): line.get_xydata().tolist() for line in loss_axis.lines + lr_axis.lines}
    assert lines == {"train loss": [[2, 2.5], [4, 2.1], [6, 1.7]], "eval loss": [[4, 2.3]],
                     "learning rate": [[2, 1e-4], [4, 2e-4], [6, 1e-4]]}
    assert figure([{"train_runtime": 1.0, "step": 0}]) is None  # nothing logged: no picture


def test_png_and_inspect_numbers(tmp_path):
    from matplotlib.image import imread

    path = write_plot(HISTORY, tmp_path / "loss.png")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert imread(str(path)).shape[:2] == (450, 800)
    assert [p.name for p in tmp_path.iterdir()] == ["loss.png"]  # no temporary file left
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": HISTORY}))
    lines = curve_text(tmp_path).splitlines()
    table = [line.split() for line in lines if line.split()[0].isdigit()]
    assert table == [["2", "2.5000", "1.000e-04"], ["4", "2.1000", "2.3000", "2.000e-04"],
                     ["6", "1.7000", "1.000e-04"]]
    assert "mean train loss 2.1000 over 6 steps" in lines[-2] and lines[-1] == f"plot: {path}"
