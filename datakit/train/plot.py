"""``loss.png``: the training and evaluation loss and the learning rate of a run, and their numbers.

The picture is drawn from the Trainer's ``log_history`` at every checkpoint and at the end, with
matplotlib's object API (no pyplot, so no global figure state and no display needed).
``curve_text`` prints the same points for ``datakit inspect`` of a training output folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

PLOT = "loss.png"
STATE = "trainer_state.json"


def curve(log_history: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) points of ``loss``, ``eval_loss`` and ``learning_rate`` from a log history.

    The Trainer's final summary entry (``train_loss``, the mean over the run) is not a point.
    """
    points: dict[str, list[tuple[int, float]]] = {"loss": [], "eval_loss": [], "learning_rate": []}
    for entry in log_history:
        for key, values in points.items():
            if key in entry and "step" in entry:
                values.append((int(entry["step"]), float(entry[key])))
    return points


def write_plot(log_history: list[dict], path: str | Path, *, title: str = "") -> Path | None:
    """Draw the curve to ``path`` (written beside it first, then renamed); None when nothing was logged."""
    fig = figure(log_history, title=title)
    if fig is None:
        return None
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(str(tmp), format="png")
    os.replace(tmp, path)
    return path


def figure(log_history: list[dict], *, title: str = ""):
    """The matplotlib Figure of a log history: loss and eval loss on the left axis, learning rate on the right."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = curve(log_history)
    if not points["loss"] and not points["eval_loss"]:
        return None
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for key, label, style in (("loss", "train loss", "-o"), ("eval_loss", "eval loss", "-s")):
        if points[key]:
            steps, values = zip(*points[key])
            ax.plot(steps, values, style, markersize=3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    lines, labels = ax.get_legend_handles_labels()
    if points["learning_rate"]:
        lr = ax.twinx()
        steps, values = zip(*points["learning_rate"])
        lines += lr.plot(steps, values, "--", color="tab:gray", label="learning rate")
        labels.append("learning rate")
        lr.set_ylabel("learning rate")
        lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    # below the axes, where it never covers a point
    ax.legend(lines, labels, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_callback(title: str = ""):
    """A TrainerCallback that redraws ``loss.png`` in the output folder at every save and at the end."""
    from transformers import TrainerCallback

    class LossPlot(TrainerCallback):
        def _draw(self, args, state):
            if state.is_world_process_zero:
                Path(args.output_dir).mkdir(parents=True, exist_ok=True)
                write_plot(state.log_history, Path(args.output_dir) / PLOT, title=title)

        def on_save(self, args, state, control, **kwargs):
            self._draw(args, state)

        def on_train_end(self, args, state, control, **kwargs):
            self._draw(args, state)

    return LossPlot()


def is_training_output(path: str | Path) -> bool:
    p = Path(path)
    return (p / STATE).is_file() or (p / "datakit_train.json").is_file() or any(p.glob("checkpoint-*/" + STATE))


def curve_text(path: str | Path) -> str:
    """The numbers behind ``loss.png`` of a training output folder, one line per logged step."""
    p = Path(path)
    state = p / STATE
    if not state.is_file():
        checkpoints = sorted(p.glob("checkpoint-*/" + STATE), key=lambda f: int(f.parent.name.split("-")[-1]))
        if not checkpoints:
            return f"{p}: a training output folder with no {STATE} yet"
        state = checkpoints[-1]
    history = json.loads(state.read_text("utf-8")).get("log_history", [])
    points = curve(history)
    by_step: dict[int, dict[str, float]] = {}
    for key, values in points.items():
        for step, value in values:
            by_step.setdefault(step, {})[key] = value
    lines = [f"{p}: training run, {len(by_step)} logged steps (from {state.relative_to(p)})",
             f"{'step':>7}  {'loss':>10}  {'eval_loss':>10}  {'learning_rate':>13}"]
    for step in sorted(by_step):
        row = by_step[step]
        cells = [f"{row[k]:.4f}" if k in row else "" for k in ("loss", "eval_loss")]
        lr = f"{row['learning_rate']:.3e}" if "learning_rate" in row else ""
        lines.append(f"{step:>7}  {cells[0]:>10}  {cells[1]:>10}  {lr:>13}")
    summary = [e for e in history if "train_loss" in e]
    if summary:
        s = summary[-1]
        lines.append(f"mean train loss {s['train_loss']:.4f} over {s.get('step')} steps, "
                     f"{s.get('train_runtime', 0):.1f} s")
    if (p / PLOT).is_file():
        lines.append(f"plot: {p / PLOT}")
    return "\n".join(lines)
