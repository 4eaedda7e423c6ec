"""Faults on a Ray cluster: worker processes killed in the middle of a build's stages. Ray runs a
lost task again; a task lost past its retries ends the build with one line and leaves the earlier
output as it was."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from datakit.builder import run_build
from datakit.cli import cli
from datakit.engines import make_engine
from datakit.recipe import from_dict
from tests.engines.test_ray import _jsonl, same_build
from tests.engines.test_ray import _sft as _sft_dedup

ray = pytest.importorskip("ray", reason="the ray engine's tests need Ray Data (pip install 'datakit[ray]')")


def _parent(pid: int) -> int:
    """The parent of process ``pid`` (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat[stat.rindex(")") + 2:].split()[1])  # the field after the state; the name may hold spaces


def _task_pids() -> list[int]:
    """Ray worker processes running one of the build's tasks (Ray titles them ``ray::<function>``),
    of this test's own Ray only: its raylet is a child of this process and the workers its children,
    so another Ray on the machine (another test run) is never touched."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                title = (p / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if title.startswith(b"ray::_call") and _parent(_parent(int(p.name))) == os.getpid():
                pids.append(int(p.name))
    return pids


class Killer:
    """SIGKILL the worker processes running a task, once ``armed`` is set: ``times`` of them, or
    every one until the block ends (``times=None``)."""

    def __init__(self, *, times: int | None = 1, armed: threading.Event | None = None):
        self.times, self.killed = times, []
        self.armed = armed or threading.Event()
        if armed is None:
            self.armed.set()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self):
        while not self._done.is_set() and (self.times is None or len(self.killed) < self.times):
            if self.armed.is_set():
                for pid in _task_pids():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    self.killed.append(pid)
                    break
            time.sleep(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()


def _sft(tmp_path: Path, data: Path) -> dict:
    """An alpaca recipe without dedup: the stages under test are the per-shard ones and the write."""
    recipe = _sft_dedup(tmp_path, data)
    recipe["transforms"] = recipe["transforms"][1:]
    return recipe


def _armed_at(monkeypatch, stage: str) -> threading.Event:
    """An event set when the driver starts the tasks of ``stage``."""
    from datakit.engines import ray_run

    armed = threading.Event()
    real = ray_run.run_tasks

    def run_tasks(items, fn, **kw):
        if kw["stage"] == stage:
            armed.set()
        return real(items, fn, **kw)

    monkeypatch.setattr(ray_run, "run_tasks", run_tasks)
    return armed


def test_a_worker_killed_while_reading_is_retried(cluster, tmp_path):
    data = tmp_path / "rows.jsonl"
    _jsonl(data, 8000)  # 11 shards of 64 KB
    recipe = from_dict(_sft(tmp_path, data), base_dir=tmp_path)
    run_build(recipe, output=tmp_path / "local", silent=True)
    with Killer() as killer:
        run_build(recipe, output=tmp_path / "ray", silent=True, engine=make_engine("ray", shard_bytes=65_536))
    assert killer.killed, "no task was running to be killed"
    same_build(tmp_path / "local", tmp_path / "ray")


def test_a_worker_killed_while_writing_is_retried(cluster, tmp_path, monkeypatch):
    """The write task whose worker died is run again from the start of its part."""
    from datakit.engines import ray_write

    data = tmp_path / "rows.jsonl"
    _jsonl(data, 6000)
    recipe = from_dict(_sft(tmp_path, data), base_dir=tmp_path)
    run_build(recipe, output=tmp_path / "local", silent=True)
    monkeypatch.setattr(ray_write, "PART_TOKENS", 2_000)  # ~80 parts: tasks to kill in the middle of
    with Killer(armed=_armed_at(monkeypatch, "write")) as killer:
        run_build(recipe, output=tmp_path / "ray", silent=True, engine=make_engine("ray", shard_bytes=65_536))
    assert killer.killed, "no write task was running to be killed"
    same_build(tmp_path / "local", tmp_path / "ray")
    assert not any(p.name == ".parts" for p in (tmp_path / "ray").rglob("*"))


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_task_that_keeps_losing_its_worker_is_one_line(cluster, tmp_path, monkeypatch):
    """Every write task's worker killed, past the retries: one line, exit code 1, and the build
    that was at the output stays byte for byte, with nothing left beside it."""
    from datakit.engines import ray_run

    data = tmp_path / "rows.jsonl"
    _jsonl(data, 12000)  # write tasks of ~0.1 s: long enough to be killed twice
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(_sft(tmp_path, data)))
    out = tmp_path / "out"
    run_build(from_dict(_sft(tmp_path, data), base_dir=tmp_path), output=out, silent=True)
    before = _tree(out)
    monkeypatch.setattr(ray_run, "RETRIES", 1)  # two runs of a task: the test stays short
    with Killer(times=None, armed=_armed_at(monkeypatch, "write")) as killer:
        result = CliRunner().invoke(cli, ["build", str(recipe_file), "--overwrite", "--silent", "--engine", "ray"])
    assert len(killer.killed) >= 2
    assert result.exit_code == 1, result.output
    # stdout may hold Ray's own notices of the dead workers (its driver prints them); the error is one line
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: the Ray cluster lost a task of the write stage after 1 retries"), line
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "recipe.yaml", "rows.jsonl"]
