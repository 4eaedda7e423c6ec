"""Transforms: the recipe's ordered steps, each a RecordBatch -> RecordBatches callable.

``STEPS`` maps a step's recipe name to its factory; its options class is the recipe's
(``recipe.STEP_OPTIONS``, where the defaults live). A new step is an options class there (and in
the JSON schema) and a factory here. Optional dependencies are imported by the factory, so they
are checked when a recipe uses the step, not at import.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ..columns import IGNORE_INDEX
from ..recipe import STEP_OPTIONS, Recipe
from ..tokenization import Tokenizer
from .base import BaseStep, Step
from .pack import Pack
from .tokenize import TokenizeText

__all__ = ["IGNORE_INDEX", "STEPS", "BaseStep", "Step", "StepKind", "Pack", "TokenizeText", "opened_steps"]


@dataclass(frozen=True)
class StepKind:
    options: type  # the options class a recipe's entry is parsed into
    make: Callable[[Any, Recipe, Tokenizer], Step]  # (options, recipe, tokenizer) -> step


def _tokenize(options, recipe: Recipe, tokenizer: Tokenizer) -> Step:
    if not recipe.is_sft:
        return TokenizeText(options, tokenizer=tokenizer)
    from .tokenize_sft import TokenizeSFT

    pack = recipe.step("pack")
    if pack is not None and (options.cutoff_len is None or options.cutoff_len > pack.block_size):
        # a pack holds whole rows: a longer row meets tokenize's `overlong` policy here
        options = dataclasses.replace(options, cutoff_len=pack.block_size)
    template = recipe.step("template")
    return TokenizeSFT(options, tokenizer=tokenizer, chat=template is not None and template.name == "chat")


def _pack(options, recipe: Recipe, tokenizer: Tokenizer) -> Step:
    if recipe.is_sft:
        from .pack_rows import PackRows

        return PackRows(options, pad_id=_pad_id(tokenizer))
    eos = tokenizer.require_eos("`pack` (EOS ends documents and blocks)")
    return Pack(options, eos_id=eos, pad_id=tokenizer.pad_id)


def _pad_id(tokenizer: Tokenizer) -> int:
    """Padding of packs: the tokenizer's pad id, else EOS, else 0 (padding is never attended nor
    trained, so its id only has to be a valid one)."""
    for candidate in (tokenizer.pad_id, tokenizer.eos_id):
        if candidate is not None:
            return candidate
    return 0


def _template(options, recipe: Recipe, tokenizer: Tokenizer) -> Step:
    from .template import make_template

    return make_template(options, tokenizer=tokenizer, chat_template=recipe.chat_template)


def _dedup(options, recipe: Recipe, tokenizer: Tokenizer) -> Step:
    from .dedup import Dedup

    return Dedup(options)


def _filter(options, recipe: Recipe, tokenizer: Tokenizer) -> Step:
    from .filter import Filter

    return Filter(options, tokenizer=tokenizer)


_FACTORIES = {"template": _template, "tokenize": _tokenize, "pack": _pack, "dedup": _dedup, "filter": _filter}
STEPS: dict[str, StepKind] = {name: StepKind(STEP_OPTIONS[name], make) for name, make in _FACTORIES.items()}


@contextmanager
def opened_steps(recipe: Recipe, tokenizer: Tokenizer) -> Iterator[list[Step]]:
    """The recipe's steps, each closed once when the block ends (``ok`` tells whether it raised),
    also when building a later step fails (a filter's rejects file is never left behind)."""
    steps: list[Step] = []
    try:
        for cfg in recipe.transforms:
            steps.append(STEPS[cfg.name].make(cfg.options, recipe, tokenizer))
        yield steps
    except BaseException:
        _close(steps, ok=False)
        raise
    _close(steps, ok=True)


def _close(steps: list[Step], *, ok: bool) -> None:
    for step in steps:
        step.close(ok=ok)
