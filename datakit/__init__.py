"""datakit: exact, fast, inspectable and reproducible datasets for LLM pretraining and instruction tuning."""
__version__ = "0.1.0"


def _stop_quietly(signum, frame):
    """Ctrl-C while the command line is still loading: one line and exit code 1, no traceback."""
    import os

    os.write(2, b"interrupted\n")
    os._exit(1)


def _guard_cli_start() -> None:
    """When this process is the ``datakit`` command, Ctrl-C during its imports ends it quietly;
    ``cli.main`` puts Python's handler back once it runs. Other programs keep their handler."""
    import os
    import signal
    import sys

    argv = getattr(sys, "orig_argv", [])
    as_module = any(a == "-m" and b == "datakit" for a, b in zip(argv, argv[1:]))
    if not as_module and os.path.basename((getattr(sys, "argv", None) or [""])[0]) != "datakit":
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        try:
            signal.signal(signal.SIGINT, _stop_quietly)
        except ValueError:  # not the main thread
            pass


_guard_cli_start()

from .errors import (BuildNotFoundError, ColumnError, DatakitError, EmptyBuildError, InspectError,  # noqa: E402
                     OutputError, RecipeError, SourceError, SplitError, StepError, TemplateError, TokenizerError)

# The rest of the API loads on first use, so `import datakit.cli` (the command line) stays light
# until a command runs.
_LAZY = {
    "build": ("builder", "build"), "load": ("writers.manifest", "load"),
    "load_manifest": ("writers.manifest", "read_manifest"),
    "run_build": ("builder", "run_build"), "Recipe": ("recipe", "Recipe"), "load_recipe": ("recipe", "load_recipe"),
    "IGNORE_INDEX": ("columns", "IGNORE_INDEX"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'datakit' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = ["__version__", "build", "load", "load_manifest", "run_build", "load_recipe", "Recipe", "IGNORE_INDEX",
           "DatakitError", "RecipeError", "SourceError", "TemplateError", "TokenizerError", "OutputError",
           "SplitError", "EmptyBuildError", "StepError", "BuildNotFoundError", "InspectError", "ColumnError"]
