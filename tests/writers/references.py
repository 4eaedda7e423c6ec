"""The readers the formats' users run, loaded for the tests.

``mosaicml-streaming`` 0.13 and ``llm-foundry`` 0.22 pin ``transformers<5``, ``numpy<2.2`` and
``torch<2.7``, so they are installed without their dependencies (README: the test command), and
their package ``__init__`` cannot run: streaming's imports ``streaming.vision`` (torchvision, whose
PyPI build does not load with the CPU torch), llm-foundry's imports composer. The modules that
read MDS (``streaming.base``) and collate fine-tuning rows (``llmfoundry.data.finetuning.collator``)
import neither, so the tests load them with their parent packages as plain namespaces.
``streaming.base`` needs brotli, python-snappy, zstd, xxhash and catalogue (the ``test`` extra).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

STREAMING_HINT = "pip install --no-deps mosaicml-streaming==0.13.0 (see the README's test command)"
LLMFOUNDRY_HINT = "pip install --no-deps llm-foundry==0.22.0 (see the README's test command)"


def _namespace(package: str, children: list[str]) -> bool:
    """Register ``package`` and its ``children`` as namespaces over their folders, without running
    their ``__init__``; False when the package is not installed."""
    if package in sys.modules:
        return True
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return False
    root = Path(list(spec.submodule_search_locations)[0])
    for name in [package, *children]:
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
            sys.modules[name] = module
    return True


def streaming_base() -> tuple[types.ModuleType | None, str]:
    """``streaming.base`` (StreamingDataset, MDSWriter), or None and why not."""
    try:
        if not _namespace("streaming", []):
            return None, f"mosaicml-streaming is not installed: {STREAMING_HINT}"
        return importlib.import_module("streaming.base"), ""
    except ImportError as e:
        return None, f"streaming.base does not import ({e}); install the test extra and {STREAMING_HINT}"


def llmfoundry_collator() -> tuple[types.ModuleType | None, str]:
    """``llmfoundry.data.finetuning.collator``, or None and why not."""
    try:
        if not _namespace("llmfoundry", ["llmfoundry.data", "llmfoundry.data.finetuning", "llmfoundry.utils"]):
            return None, f"llm-foundry is not installed: {LLMFOUNDRY_HINT}"
        return importlib.import_module("llmfoundry.data.finetuning.collator"), ""
    except ImportError as e:
        return None, f"llmfoundry's collator does not import ({e}); {LLMFOUNDRY_HINT}"
