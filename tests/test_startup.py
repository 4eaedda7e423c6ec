"""The command line's process settings: set for the commands that gain from them, in a fresh
process (so they are tested where they act), and never by the library."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import gc, os, sys; from datakit import startup; startup.prepare({command!r}); "
         "import pyarrow as pa; pa.array([1]); "
         "print(gc.isenabled(), os.environ.get('OPENBLAS_NUM_THREADS'), 'pandas' in sys.modules)")


def _run(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("command,expected", [
    ("build", "False 1 False"),  # no cyclic GC, one BLAS thread, pandas never imported
    ("inspect", "True 1 False"),
    ("train", "True None"),  # training multiplies matrices: nothing is changed
])
def test_prepare_sets_what_the_command_gains_from(command, expected):
    out = _run(PROBE.format(command=command))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(expected)


def test_finish_flushes_and_exits_with_the_code_without_teardown():
    code = ("import atexit, sys; from datakit import startup; atexit.register(print, 'teardown'); "
            "print('written', end=''); startup.finish(3)")
    out = _run(code)
    assert (out.returncode, out.stdout) == (3, "written")


def test_the_library_leaves_the_process_as_it_was(tmp_path):
    recipe = ROOT / "recipes" / "pretrain.yaml"
    code = (f"import gc, datakit; datakit.run_build({str(recipe)!r}, output={str(tmp_path / 'out')!r}, silent=True); "
            "import sys; print(gc.isenabled(), 'OPENBLAS_NUM_THREADS' in __import__('os').environ)")
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True False"
