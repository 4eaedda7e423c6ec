"""Atomic output: at every step of a swap the target is a complete old or new build (or the next
run restores the old one), failures leave earlier output as it was, and datakit removes only what
it made."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datakit.errors import OutputError
from datakit.writers import atomic
from datakit.writers.atomic import MARKER, StagedFile, recover, staged_output

from .builds import leftovers, minimal_build, new_build, tag_of, write_build

# ---------------------------------------------------------------- stale stages: only ours, only dead

def _hold_lock(path: Path) -> subprocess.Popen:
    """Another process (as a build in another container would) holding the flock on ``path``."""
    code = ("import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDWR)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_stale_cleanup_removes_only_dead_stages_of_this_output(tmp_path):
    parent = tmp_path / "o"
    parent.mkdir()
    target = parent / "*"  # `-o 'o/*'`: the name must be matched literally, not as a pattern
    photos = parent / ".photos.tmp-3999999-backup"
    photos.mkdir()
    (photos / "img.jpg").write_text("precious")
    other = parent / ".other.datakit-stage-0123456789ab"  # another output's stage
    other.mkdir()
    (other / MARKER).write_text("")
    unmarked = parent / ".*.datakit-stage-aaaaaaaaaaaa"  # right name, but no marker: not provably ours
    unmarked.mkdir()
    (unmarked / "x").write_text("x")
    dead = parent / ".*.datakit-stage-bbbbbbbbbbbb"
    dead.mkdir()
    (dead / MARKER).write_text("host 1 (pid of a process that may well be alive)")
    (dead / "half.arrow").write_text("x")
    live = parent / ".*.datakit-stage-cccccccccccc"
    live.mkdir()
    (live / MARKER).write_text(f"host {os.getpid()}")  # same pid as ours: liveness is the lock, not the pid
    holder = _hold_lock(live / MARKER)
    try:
        minimal_build(target, False)
        assert (target / "manifest.json").exists()
        assert photos.exists() and other.exists() and unmarked.exists() and live.exists()
        assert not dead.exists()
    finally:
        holder.kill()
        holder.wait()
    recover(target)
    assert not live.exists() and photos.exists() and unmarked.exists()


def test_a_second_build_never_removes_a_live_stage_in_another_pid_namespace(tmp_path):
    """The live build runs in its own PID namespace (`unshare --pid`), like a second container on
    the same volume: its PID means nothing here, its lock does."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--pid", "--fork", "true"],
                                                         capture_output=True).returncode != 0:
        pytest.skip("cannot make a PID namespace here (needs root and unshare)")
    target = tmp_path / "out"
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from datakit.writers.atomic import staged_output
        with staged_output({str(target)!r}, overwrite=True) as stage:
            (stage / "manifest.json").write_text('{{"datakit_version": "0.1.0", "tag": "first"}}')
            print("staged", flush=True)
            sys.stdin.readline()
        print("done", flush=True)
    """)
    first = subprocess.Popen(["unshare", "--pid", "--fork", sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "staged"
        minimal_build(target, True)  # a second build finishes while the first is still writing
        first.stdin.write("\n")
        first.stdin.flush()
        assert first.stdout.readline().strip() == "done"
        assert first.wait(timeout=30) == 0
    finally:
        first.kill()
    assert json.loads((target / "manifest.json").read_text())["tag"] == "first"
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- the swap, a failure at every step

class Crash(BaseException):
    """The process died here: from now on nothing it does reaches the disk."""


class Injector:
    """Counts the calls that change the filesystem (rename, replace, unlink, rmdir, mkdir, open
    for writing) and makes call number ``at`` (and every later one) fail with ``error``. Before
    each call it checks that the target is a complete build, or that a journal can restore it."""

    OPS = ("rename", "replace", "unlink", "rmdir", "mkdir")

    def __init__(self, monkeypatch, target: Path, *, at: int | None, error=Crash, check=True):
        self.target, self.at, self.error, self.check = target, at, error, check
        self.calls, self.dead = 0, False
        for name in self.OPS:
            real = getattr(os, name)
            monkeypatch.setattr(os, name, self._wrap(real))

    def _wrap(self, real):
        def op(*args, **kwargs):
            if self.check:
                assert_recoverable(self.target)
            if self.dead or (self.at is not None and self.calls == self.at):
                self.dead = self.error is Crash
                self.calls += 1
                raise self.error() if self.error is Crash else self.error(16, "Device or resource busy")
            self.calls += 1
            return real(*args, **kwargs)
        return op


def assert_recoverable(target: Path) -> None:
    """The invariant at every instant: a complete build at the target, or a journal naming a
    complete old build that the next run puts back."""
    if tag_of(target) in ("old", "new"):
        return
    journal = target.parent / f".{target.name}.datakit-swap"
    assert journal.exists(), f"target incomplete and no journal: {sorted(os.listdir(target.parent))}"
    old = json.loads(journal.read_text())["old"]
    assert old is not None and tag_of(target.parent / f".{target.name}.datakit-old-{old}") == "old"


def count_ops(tmp_path, monkeypatch) -> int:
    target = tmp_path / "count" / "out"
    write_build(target, "old")
    with monkeypatch.context() as m:
        inj = Injector(m, target, at=None)
        new_build(target)
    return inj.calls


def test_the_swap_has_a_known_number_of_steps(tmp_path, monkeypatch):
    # mkdir stage; journal replace; unlink marker; rename x2; rmtree old (4 files, 2 dirs); unlink journal
    assert count_ops(tmp_path, monkeypatch) >= 10


def _crashing(monkeypatch, target, *, at, check, run):
    """Run ``run(target)`` with the process dying at the ``at``-th file-system call."""
    with monkeypatch.context() as m:
        Injector(m, target, at=at, check=check)
        try:
            run(target)
        except Crash:
            pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(step=st.integers(0, 40), recovery_step=st.one_of(st.none(), st.integers(0, 12)),
       had_old=st.booleans(), old_files=st.integers(0, 3))
def test_a_crash_at_any_step_leaves_old_or_new_after_recovery(tmp_path_factory, monkeypatch, step, recovery_step,
                                                              had_old, old_files):
    parent = tmp_path_factory.mktemp("swap")
    target = parent / "out"
    if had_old:
        write_build(target, "old", files=old_files)
    _crashing(monkeypatch, target, at=step, check=had_old, run=new_build)
    if recovery_step is not None:  # the next run dies too, while recovering
        _crashing(monkeypatch, target, at=recovery_step, check=False, run=recover)
    recover(target)
    assert tag_of(target) in (("old", "new") if had_old else (None, "new"))
    if not had_old and tag_of(target) is None:
        assert not target.exists()
    assert leftovers(parent) == []


@pytest.mark.parametrize("step", range(12))
def test_an_error_at_any_step_leaves_old_or_new_and_no_leftovers(tmp_path, monkeypatch, step):
    """A failing call (EBUSY) rather than a dead process: the error reaches the caller, the target
    holds a complete build at once, and nothing is left beside it."""
    target = tmp_path / "out"
    write_build(target, "old")
    with monkeypatch.context() as m:
        Injector(m, target, at=step, error=OSError)
        try:
            new_build(target)
            raised = None
        except (OSError, OutputError) as e:
            raised = e
    assert tag_of(target) in ("old", "new")
    if raised is not None and tag_of(target) == "old":
        assert "untouched" in str(raised) or isinstance(raised, OSError)
    recover(target)
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- kill -9 in a subprocess

KILL_AT = textwrap.dedent("""
    import json, os, signal, sys
    sys.path.insert(0, sys.argv[3])
    target, at = sys.argv[1], int(sys.argv[2])
    calls = [0]
    for name in ("rename", "replace", "unlink", "rmdir"):
        real = getattr(os, name)
        def op(*a, _real=real, **k):
            if calls[0] == at:
                os.kill(os.getpid(), signal.SIGKILL)
            calls[0] += 1
            return _real(*a, **k)
        setattr(os, name, op)
    from datakit.writers.atomic import staged_output
    with staged_output(target, overwrite=True) as stage:
        (stage / "train").mkdir()
        for i in range(3):
            (stage / "train" / f"data-{i}.arrow").write_text(f"new {i}")
        (stage / "dataset_dict.json").write_text('{"splits": ["train"]}')
        (stage / "manifest.json").write_text(json.dumps({"datakit_version": "0.1.0", "tag": "new",
                                                         "splits": {"train": {}}}))
""")


@pytest.mark.parametrize("at", [0, 1, 2, 3, 4, 6, 9])
def test_kill_9_at_each_swap_step_then_recovery_leaves_old_or_new(tmp_path, at):
    target = tmp_path / "out"
    write_build(target, "old")
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run([sys.executable, "-c", KILL_AT, str(target), str(at), root], capture_output=True)
    assert proc.returncode in (0, -signal.SIGKILL)
    assert_recoverable(target)
    recover(target)
    assert tag_of(target) in ("old", "new") and leftovers(tmp_path) == []


def test_an_interrupted_swap_is_restored_with_a_note(tmp_path, monkeypatch, caplog):
    target = tmp_path / "out"
    write_build(target, "old")
    with monkeypatch.context() as m:
        inj = Injector(m, target, at=None)
        new_build(tmp_path / "count")
        n = inj.calls
    for at in range(n):
        with monkeypatch.context() as m:
            Injector(m, target, at=at)
            try:
                new_build(target)
            except Crash:
                pass
        if not target.exists():
            break
        shutil.rmtree(target)
        write_build(target, "old")
        recover(target)
    assert not target.exists(), "no step leaves the target absent, yet a swap has two renames"
    with caplog.at_level("WARNING", logger="datakit"):
        assert recover(target).startswith("restored the earlier build")
    assert tag_of(target) == "old"


# ---------------------------------------------------------------- signals

def test_ctrl_c_during_the_swap_waits_for_it_and_says_the_build_is_in_place(tmp_path, monkeypatch):
    target = tmp_path / "out"
    write_build(target, "old")
    real_rename = os.rename
    sent = []

    def rename(src, dst, **kw):
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)  # between the two renames
        return real_rename(src, dst, **kw)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(KeyboardInterrupt, match="after the new build was in place"):
        new_build(target)
    assert tag_of(target) == "new" and leftovers(tmp_path) == []


def test_ctrl_c_while_staging_says_the_output_is_untouched_and_it_is(tmp_path):
    target = tmp_path / "out"
    write_build(target, "old")
    with pytest.raises(KeyboardInterrupt, match=f"interrupted; {target} is untouched"):
        with staged_output(target, overwrite=True) as stage:
            (stage / "x").write_text("half")
            raise KeyboardInterrupt
    assert tag_of(target) == "old" and leftovers(tmp_path) == []
    with pytest.raises(KeyboardInterrupt, match="nothing was written"):
        with staged_output(tmp_path / "fresh", overwrite=True):
            raise KeyboardInterrupt
    assert not (tmp_path / "fresh").exists()


# ---------------------------------------------------------------- side files (rejects)

def test_a_staged_file_appears_only_on_commit_and_a_dead_ones_part_is_removed(tmp_path):
    dest = tmp_path / "rejects.jsonl"
    dest.write_text("earlier\n")
    f = StagedFile(dest)
    f.open().write("new\n")
    assert dest.read_text() == "earlier\n"
    f.discard()
    assert dest.read_text() == "earlier\n" and sorted(os.listdir(tmp_path)) == ["rejects.jsonl"]
    dead = tmp_path / ".rejects.jsonl.datakit-part-0123456789ab"  # left by a killed build
    dead.write_text("x")
    live = tmp_path / ".rejects.jsonl.datakit-part-ba9876543210"
    live.write_text("y")
    holder = _hold_lock(live)
    try:
        g = StagedFile(dest)
        g.open().write("newer\n")
        g.commit()
        assert not dead.exists() and live.exists()
    finally:
        holder.kill()
        holder.wait()
    assert dest.read_text() == "newer\n"


def test_fcntl_lock_is_per_open_file_so_a_stage_is_alive_while_its_build_runs(tmp_path):
    target = tmp_path / "out"
    with staged_output(target, overwrite=False) as stage:
        fd = os.open(stage / MARKER, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
        atomic.recover(target)  # a concurrent cleanup: the live stage stays
        assert stage.exists()
        (stage / "manifest.json").write_text('{"datakit_version": "0.1.0"}')
    assert (target / "manifest.json").exists()


def test_sigterm_while_the_stage_is_made_leaves_no_stage(tmp_path, monkeypatch):
    """A SIGTERM that lands right after the stage folder is made (the moment a supervisor sees
    it appear): the stage is removed and the message says the target is untouched."""
    target = tmp_path / "out"
    write_build(target, "old")
    before = tag_of(target)
    make = atomic._make_stage

    def signalled(real):
        made = make(real)
        os.kill(os.getpid(), signal.SIGTERM)
        return made

    monkeypatch.setattr(atomic, "_make_stage", signalled)
    with pytest.raises(KeyboardInterrupt, match="interrupted; .* is untouched"):
        with staged_output(target, overwrite=True):
            pass
    assert tag_of(target) == before and leftovers(tmp_path) == []
