"""Process-wide settings of the ``datakit`` command line, kept here and nowhere else: a program
that calls ``datakit.build`` itself (a notebook, a training script) keeps its process as it was.

Each one is kept because it was measured to pay, on a 200,000-row alpaca build (Llama 2
tokenizer, cutoff 256; 65 s of CPU) and a 320 MB pretraining build (blocks of 1024; 129 s):
- pyarrow's first conversion of Python objects imports pandas only to learn whether they are
  DataFrames: 0.25 s on a quiet machine (0.5-0.7 s on a busy one), in every command, a third of
  a cached rebuild (0.73 s). A build hands pyarrow lists and NumPy arrays, so that probe is made
  to find no pandas (``build``, ``inspect``, ``validate``);
- the cyclic garbage collector is off during ``build``: a build makes millions of short-lived
  lists and dicts and a few hundred reference cycles. The collector's passes took 2.0 s of the
  alpaca build's 65 s of CPU (3.1%; 3,805 collections) and 0.17 s of the pretraining build's 129 s
  (0.1%);
- glibc's allocator keeps freed memory for reuse during ``build`` (``mallopt``): by default every
  allocation past 128 KB (a batch's NumPy arrays, Arrow buffers) is a fresh ``mmap`` whose pages
  fault in zeroed and go back to the kernel when freed. Served from the heap up to 16 MB, with
  64 MB kept before trimming, the chat build (20,000 conversations) took 105,000 page faults
  instead of 234,000 and 0.63 s of system time instead of 0.98 s (three runs each), for ~30 MB
  more peak RSS;
- ``finish`` ends a finished build with ``os._exit``: everything is written, closed and renamed,
  and the interpreter's teardown would free the tokenizer's and the libraries' objects one by one
  (0.2-0.3 s after the alpaca build, on a busy machine).
Measured and dropped: one OpenBLAS thread (a build never calls BLAS; the idle pool thread used
0.05 s). The executor's TOKENIZERS_PARALLELISM setting is scoped to its tokenizing threads and
measured there: see ``executor._one_thread_per_batch``.
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
    _skip_pandas_probe()
    if command == "build":
        gc.disable()
        _keep_freed_memory()


def finish(code) -> NoReturn:
    """Flush the output and end the process with ``code`` without the interpreter's teardown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # a closed pipe (`datakit build ... | head`)
            pass
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def _keep_freed_memory() -> None:
    """glibc: serve allocations up to 16 MB from the heap and trim it past 64 MB free (see the
    module docstring). Other C libraries have no ``mallopt`` and keep their own behaviour."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 16 << 20)
    mallopt(_M_TRIM_THRESHOLD, 64 << 20)


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
