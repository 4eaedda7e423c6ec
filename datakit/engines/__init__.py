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

from typing import Protocol

from ..progress import Progress
from ..recipe import Recipe
from ..transforms.base import Step
from ..stages import Produced
from ..writers.spill import SpillWriter
from .local import LocalEngine


class Engine(Protocol):
    name: str

    def run(self, recipe: Recipe, steps: list[Step], rows: SpillWriter, *, progress: Progress) -> Produced: ...


ENGINES = {"local": LocalEngine}

__all__ = ["ENGINES", "Engine", "LocalEngine"]
