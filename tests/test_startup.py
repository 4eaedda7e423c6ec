"""The command line's process settings: set for the commands that gain from them, in a fresh
process (so they are tested where they act), and never by the library."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import gc, os, sys; BEFORE = set(os.environ); from datakit import startup; startup.prepare({command!r}); "
         "import pyarrow as pa; pa.array([1]); "
         "print(gc.isenabled(), 'pandas' in sys.modules, sorted(k for k in os.environ if k not in BEFORE))")


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("command,expected", [
    ("build", "False False []"),  # no cyclic GC, pandas never imported, the environment untouched
    ("inspect", "True False []"),
    ("train", "True True []"),  # nothing changes: pyarrow's probe imports pandas
])
def test_prepare_sets_what_the_command_gains_from(command, expected):
    out = _run(PROBE.format(command=command))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


def test_finish_flushes_and_exits_with_the_code_without_teardown():
    code = ("import atexit, sys; from datakit import startup; atexit.register(print, 'teardown'); "
            "print('written', end=''); startup.finish(3)")
    out = _run(code)
    assert (out.returncode, out.stdout) == (3, "written")


def test_the_library_leaves_the_process_as_it_was(tmp_path):
    recipe = ROOT / "recipes" / "pretrain.yaml"
    code = ("import gc, os; before = dict(os.environ); "
            f"import datakit; datakit.run_build({str(recipe)!r}, output={str(tmp_path / 'out')!r}, silent=True); "
            "print(gc.isenabled(), dict(os.environ) == before)")
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True True"


MMAPPED = ("import ctypes, numpy as np; from datakit import startup; startup.prepare({command!r}); "
           "F = ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks', 'uordblks', 'fordblks', "
           "'keepcost'); "
           "Info = type('Info', (ctypes.Structure,), {{'_fields_': [(n, ctypes.c_size_t) for n in F]}}); "
           "info = ctypes.CDLL(None).mallinfo2; info.restype = Info; before = info().hblkhd; "
           "a = np.ones(8 << 20, np.uint8); print(info().hblkhd - before >= 8 << 20)")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings (mallopt, mallinfo2)")
@pytest.mark.parametrize("command,mmapped", [("build", "False"), ("inspect", "True")])
def test_build_serves_large_arrays_from_the_heap(command, mmapped):
    """``build`` keeps an 8 MB array in glibc's heap (no fresh mmap whose pages fault in zeroed);
    other commands keep glibc's default (an mmap past 128 KB)."""
    out = _run(MMAPPED.format(command=command))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == mmapped
