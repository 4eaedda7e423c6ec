"""``--silent`` for the libraries underneath: transformers', datasets' and peft's bars, logs and warnings."""
from __future__ import annotations

import contextlib
import logging
import warnings


@contextlib.contextmanager
def silenced(on: bool = True):
    """Within the block: no progress bars, no library log lines below ERROR, no Python warnings.
    Every setting is put back afterwards, so a Python caller's own logging is left as it was."""
    if not on:
        yield
        return
    import datasets
    import transformers

    tf_log, ds_log = transformers.utils.logging, datasets.utils.logging
    before = (tf_log.get_verbosity(), ds_log.get_verbosity(), tf_log.is_progress_bar_enabled(),
              datasets.is_progress_bar_enabled())
    names = ("peft", "accelerate", "torch")
    levels = {n: logging.getLogger(n).level for n in names}
    tf_log.set_verbosity_error()
    ds_log.set_verbosity_error()
    tf_log.disable_progress_bar()
    datasets.disable_progress_bars()
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        tf_log.set_verbosity(before[0])
        ds_log.set_verbosity(before[1])
        if before[2]:
            tf_log.enable_progress_bar()
        if before[3]:
            datasets.enable_progress_bars()
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)
