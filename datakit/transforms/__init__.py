"""Transforms: the recipe's ordered steps, each a RecordBatch -> RecordBatches callable."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from ..recipe import Recipe
from ..tokenization import Tokenizer
from ..columns import IGNORE_INDEX
from .base import BaseStep, Step
from .pack import Pack
from .tokenize import TokenizeText

__all__ = ["IGNORE_INDEX", "BaseStep", "Step", "Pack", "TokenizeText", "make_steps", "opened_steps"]


@contextmanager
def opened_steps(recipe: Recipe, tokenizer: Tokenizer) -> Iterator[list[Step]]:
    """The recipe's steps, each closed once when the block ends (``ok`` tells whether it raised),
    also when building a later step fails (a filter's rejects file is never left behind)."""
    steps: list[Step] = []
    try:
        _make_steps(recipe, tokenizer, into=steps)
        yield steps
    except BaseException:
        _close(steps, ok=False)
        raise
    _close(steps, ok=True)


def _close(steps: list[Step], *, ok: bool) -> None:
    for step in steps:
        if hasattr(step, "close"):
            step.close(ok=ok)


def make_steps(recipe: Recipe, tokenizer: Tokenizer) -> list[Step]:
    """Build the recipe's steps in order. Optional dependencies are checked here, not at import."""
    steps: list[Step] = []
    _make_steps(recipe, tokenizer, into=steps)
    return steps


def _make_steps(recipe: Recipe, tokenizer: Tokenizer, *, into: list[Step]) -> None:
    steps = into
    for cfg in recipe.transforms:
        name, opts = cfg.name, cfg.options
        if name == "tokenize":
            if recipe.is_sft:
                from .tokenize_sft import TokenizeSFT

                template = recipe.step("template")
                chat = template is not None and template.name == "chat"
                steps.append(TokenizeSFT(opts, tokenizer=tokenizer, chat=chat))
            else:
                steps.append(TokenizeText(opts, tokenizer=tokenizer))
        elif name == "pack":
            eos = tokenizer.require_eos("`pack` (EOS ends documents and blocks)")
            steps.append(Pack(opts, eos_id=eos, pad_id=tokenizer.pad_id))
        elif name == "template":
            from .template import make_template

            steps.append(make_template(opts, tokenizer=tokenizer, chat_template=recipe.chat_template))
        elif name == "dedup":
            from .dedup import Dedup

            steps.append(Dedup(opts))
        elif name == "filter":
            from .filter import Filter

            steps.append(Filter(opts, tokenizer=tokenizer))
