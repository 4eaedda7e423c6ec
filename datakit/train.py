"""``train``: LoRA fine-tuning on a built folder with transformers' Trainer and peft.

It consumes exactly what ``datakit build`` writes (SFT or pretraining). The dtype follows the
hardware: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on the CPU. torch and peft are
imported here only, so the base install stays light: ``pip install 'datakit[train]'``.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from .columns import IGNORE_INDEX
from .errors import DatakitError, TrainError
from .recipe import TrainConfig



def _require():
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise TrainError(f"datakit train needs torch and peft ({e.name} is missing): "
                         f"pip install 'datakit[train]'") from None


@dataclass
class Collator:
    """Pads a batch: input_ids with ``pad_id``, attention_mask with 0, labels with -100.

    Labels are padded with -100 rather than copied from input_ids, so padding never counts in the
    loss even when the pad id is the EOS id, and a real EOS keeps its label.
    """

    pad_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict]):
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        batch = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in features:
            n = len(f["input_ids"])
            pad = longest - n
            batch["input_ids"].append(list(f["input_ids"]) + [self.pad_id] * pad)
            batch["attention_mask"].append(list(f.get("attention_mask") or [1] * n) + [0] * pad)
            batch["labels"].append(list(f["labels"]) + [IGNORE_INDEX] * pad)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


def hardware_dtype() -> str:
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def _check_data(ds, vocab_size: int, path: Path) -> None:
    import numpy as np

    for split, d in ds.items():
        missing = [c for c in ("input_ids", "labels") if c not in d.column_names]
        if missing:
            raise TrainError(f"{path}: split '{split}' has no {' or '.join(missing)} column; build it with "
                             f"`datakit build` (columns input_ids, attention_mask, labels)")
        ids = d.data.column("input_ids").combine_chunks().values.to_numpy()
        if len(ids) and int(ids.max()) >= vocab_size:
            row = int(np.argmax(np.array([max(r) if len(r) else -1 for r in d["input_ids"]]) >= vocab_size))
            raise TrainError(f"{path}: split '{split}' row {row} has token id {int(ids.max())}, beyond the model's "
                             f"vocabulary of {vocab_size}: the build's tokenizer does not match the model")


def _target_modules(model, wanted: list[str]) -> list[str]:
    import torch

    linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    found = [w for w in wanted if w in linear]
    if not found:
        raise TrainError(f"none of the LoRA target modules {wanted} is in this model; its linear layers are: "
                         f"{', '.join(linear)} (set --lora-target-modules)")
    return found


def _save_tokenizer(manifest: dict, out: Path) -> None:
    source = manifest.get("tokenizer", {}).get("source")
    if not source:
        return
    p = Path(source)
    if p.is_file():
        for f in manifest["tokenizer"].get("files", [str(p)]):
            if Path(f).is_file():
                shutil.copy2(f, out / Path(f).name)
        return
    try:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(source).save_pretrained(str(out))
    except Exception as e:  # the adapter is still usable; say why the tokenizer is not beside it
        print(f"note: tokenizer not saved with the adapter ({type(e).__name__}: {e})")


@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict
    log_history: list
    model: object


def train(data: str | Path, *, model: str, config: TrainConfig | None = None, output_dir: str | Path | None = None,
          resume_from_checkpoint: str | bool | None = None, silent: bool = False) -> TrainResult:
    """Fine-tune ``model`` with LoRA on the built folder ``data``; returns metrics and the peft model.

    Example:
        >>> train("build/alpaca", model="path/to/llama", config=TrainConfig(max_steps=100))
    """
    _require()
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from .writers.manifest import load, read_manifest

    cfg = config or TrainConfig()
    data = Path(data)
    manifest = read_manifest(data)
    ds = load(data)
    out = Path(output_dir or cfg.output_dir or (data.parent / f"{data.name}-lora"))
    dtype = hardware_dtype()
    try:
        base = AutoModelForCausalLM.from_pretrained(
            model, dtype={"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype])
    except OSError as e:
        raise TrainError(f"cannot load model '{model}': {str(e).splitlines()[0]}") from None
    _check_data(ds, base.get_input_embeddings().num_embeddings, data)
    if cfg.batch_size % cfg.micro_batch_size:
        raise TrainError(f"batch_size {cfg.batch_size} must be a multiple of micro_batch_size {cfg.micro_batch_size}")
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=_target_modules(base, list(cfg.lora_target_modules)), bias="none",
                      task_type="CAUSAL_LM")
    if cfg.gradient_checkpointing:
        # transformers 5 renamed it activation checkpointing; 4.x only has the old name
        enable = getattr(base, "activation_checkpointing_enable", None) or base.gradient_checkpointing_enable
        enable()
        base.enable_input_require_grads()
    peft_model = get_peft_model(base, lora)
    tok = manifest["tokenizer"]
    pad_id = tok.get("pad_id") if tok.get("pad_id") is not None else tok.get("eos_id")
    has_val = "validation" in ds
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=cfg.micro_batch_size,
        per_device_eval_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=cfg.batch_size // cfg.micro_batch_size,
        num_train_epochs=cfg.num_epochs, max_steps=cfg.max_steps or -1, learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps, logging_steps=cfg.logging_steps, seed=cfg.seed,
        bf16=dtype == "bf16", fp16=dtype == "fp16", use_cpu=not torch.cuda.is_available(),
        eval_strategy="steps" if has_val else "no", eval_steps=max(cfg.logging_steps, 1) if has_val else None,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2,
        report_to=[], remove_unused_columns=False, disable_tqdm=silent, dataloader_num_workers=0)
    collator = Collator(pad_id=int(pad_id if pad_id is not None else 0),
                        pad_to_multiple_of=8 if torch.cuda.is_available() else None)
    trainer = Trainer(model=peft_model, args=args, train_dataset=ds["train"],
                      eval_dataset=ds["validation"] if has_val else None, data_collator=collator)
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint or None)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out))
    trainer.save_state()
    _save_tokenizer(manifest, out)
    metrics = dict(result.metrics)
    if has_val:
        metrics.update(trainer.evaluate())
    (out / "datakit_train.json").write_text(json.dumps({
        "data": str(data), "model": model, "dtype": dtype, "config": dataclasses.asdict(cfg), "metrics": metrics,
        "inputs_fingerprint": manifest.get("inputs_fingerprint")}, indent=2, default=str))
    return TrainResult(output_dir=out, metrics=metrics, log_history=trainer.state.log_history, model=peft_model)


def config_from(recipe_path: str | None, overrides: dict) -> tuple[TrainConfig, str | None, str | None]:
    """The recipe's ``train:`` section (if any) with command-line ``overrides`` on top.

    Returns (config, model, data folder).
    """
    base: dict = {}
    data = None
    if recipe_path:
        from .recipe import load_recipe

        recipe = load_recipe(recipe_path)
        base = dataclasses.asdict(recipe.train) if recipe.train else {}
        data = recipe.output
    base.update({k: v for k, v in overrides.items() if v is not None})
    model = base.pop("base_model", None)
    try:
        return TrainConfig(**{**base, "base_model": model}), model, data
    except TypeError as e:
        raise DatakitError(f"train settings: {e}") from None
