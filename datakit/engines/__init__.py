"""Engines run read -> steps -> spill (see ``stages``): ``local`` in this process with threads;
another engine (a cluster) runs the same shards and steps elsewhere and fills the same spill.

An engine's ``run(recipe, steps, rows, progress=...)`` reads every shard of ``stages.shards(recipe)``,
passes the batches through ``steps`` (a step is flushed once at the end of each shard it ran on;
``step.stateless`` says whether batches may run at once or elsewhere), writes the results into
``rows`` (a ``SpillWriter``; the caller closes it) and returns ``stages.Produced``: the
``FileInfo`` of every file read, in recipe order, and the seconds spent in each step. Counts stay
in ``step.stats``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ..progress import Progress
from ..recipe import Recipe
from ..transforms.base import Step
from ..stages import Produced
from ..writers.spill import SpillWriter
from .local import LocalEngine


class Engine(Protocol):
    name: str

    def rows(self, folder: Path) -> SpillWriter:
        """Where the built rows go (``folder`` is inside the staged output)."""

    def run(self, recipe: Recipe, steps: list[Step], rows: SpillWriter, *, progress: Progress) -> Produced: ...

    def write(self, plan, rows: SpillWriter, folder: Path, **options) -> dict[str, dict]:
        """The write stage: ``stages.write`` (same options), or the same result made elsewhere."""


def _ray(**options):
    from .ray import RayEngine

    return RayEngine(**options)


ENGINES = {"local": LocalEngine, "ray": _ray}


def make_engine(engine: "Engine | str | None" = None, **options) -> Engine:
    """An engine by name (``local``, ``ray``) with its options, or the engine object given."""
    if engine is None:
        engine = "local"
    if not isinstance(engine, str):
        return engine
    if engine not in ENGINES:
        from ..errors import EngineError

        raise EngineError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    return ENGINES[engine](**options)


__all__ = ["ENGINES", "Engine", "LocalEngine", "make_engine"]
