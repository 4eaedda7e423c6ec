"""datakit: exact, fast, inspectable and reproducible datasets for LLM pretraining and instruction tuning."""
__version__ = "0.1.0"

from .errors import DatakitError, OutputError, RecipeError, SourceError, TemplateError, TokenizerError  # noqa: E402

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
           "DatakitError", "RecipeError", "SourceError", "TemplateError", "TokenizerError", "OutputError"]
