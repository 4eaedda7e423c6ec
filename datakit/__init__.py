"""datakit: exact, fast, inspectable and reproducible datasets for LLM pretraining and instruction tuning."""
__version__ = "0.1.0"

from .build import build, load, read_manifest as load_manifest, run_build  # noqa: E402
from .errors import DatakitError, OutputError, RecipeError, SourceError, TemplateError, TokenizerError  # noqa: E402
from .recipe import Recipe, load_recipe  # noqa: E402
from .transforms.base import IGNORE_INDEX  # noqa: E402

__all__ = ["__version__", "build", "load", "load_manifest", "run_build", "load_recipe", "Recipe", "IGNORE_INDEX",
           "DatakitError", "RecipeError", "SourceError", "TemplateError", "TokenizerError", "OutputError"]
