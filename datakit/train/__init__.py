"""``datakit train`` and ``datakit merge``: fine-tuning on a built folder with transformers' Trainer
and peft, and exporting the result.

- ``options``: ``TrainConfig``, every option and its default (no torch needed to import it);
- ``arguments``: the config as ``TrainingArguments`` and ``LoraConfig``;
- ``model``: finding and loading the base model, precision, QLoRA, vocabulary checks;
- ``collator``: padded and packed batches (which attention kernels keep packed rows apart);
- ``plot``: ``loss.png`` and its numbers; ``export``: tokenizer, chat template and ``merge``;
- ``run``: ``train`` itself.

``pip install 'datakit[train]'`` brings torch, peft, accelerate and matplotlib.
"""
from __future__ import annotations

from .options import TrainConfig

__all__ = ["IGNORE_INDEX", "TrainConfig", "TrainResult", "train", "merge", "config_from", "Collator",
           "PackedCollator"]


def __getattr__(name: str):
    # torch, peft and transformers load only when a training name is used
    if name in ("train", "TrainResult", "config_from", "hardware_dtype"):
        from . import run

        return getattr(run, name)
    if name == "IGNORE_INDEX":
        from ..columns import IGNORE_INDEX

        return IGNORE_INDEX
    if name == "merge":
        from .export import merge

        return merge
    if name in ("Collator", "PackedCollator"):
        from . import collator

        return getattr(collator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
