"""Process-wide settings of the ``datakit`` command line, kept here and nowhere else: a program
that calls ``datakit.build`` itself (a notebook, a training script) keeps its process as it was.

Each one is kept because it pays in a build of the command line:
- one BLAS thread for ``build``/``inspect``/``validate``: they never multiply matrices, and an
  idle OpenBLAS pool spins on the cores the tokenizer needs;
- pyarrow's first conversion of Python objects imports pandas (~0.25 s) only to learn whether
  they are DataFrames; a build hands it lists and NumPy arrays, so that probe finds no pandas;
- the cyclic garbage collector is off during ``build``: a build makes millions of short-lived
  lists and dicts and a few hundred reference cycles, and the collector's rescans of the live
  objects cost ~4% of a build's time;
- ``finish`` ends a finished build with ``os._exit``: everything is written, closed and renamed,
  and the interpreter's teardown would spend ~50 ms freeing the tokenizer's and the libraries'
  objects one by one.
(The executor's TOKENIZERS_PARALLELISM setting is scoped to its tokenizing threads: see
``executor._one_thread_per_batch``.)
"""
from __future__ import annotations

import gc
import os
import sys
from typing import NoReturn

LIGHT_COMMANDS = ("build", "inspect", "validate")


def prepare(command: str | None) -> None:
    """Set the process up for ``command`` (the first argument of ``datakit``)."""
    if command not in LIGHT_COMMANDS:
        return
    if "numpy" not in sys.modules:  # NumPy reads it when it loads
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    _skip_pandas_probe()
    if command == "build":
        gc.disable()


def finish(code) -> NoReturn:
    """Flush the output and end the process with ``code`` without the interpreter's teardown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # a closed pipe (`datakit build ... | head`)
            pass
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


class _NoPandas:
    """A meta-path finder that makes ``pandas`` look absent (see ``_skip_pandas_probe``)."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def _skip_pandas_probe() -> None:
    """Let pyarrow's pandas probe run once, finding no pandas; pyarrow's own pandas functions
    still import pandas when called."""
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(finder)
