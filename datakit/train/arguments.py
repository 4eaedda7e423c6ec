"""``TrainConfig`` -> transformers' ``TrainingArguments`` and peft's ``LoraConfig``.

Kept apart from the run so that a test can check that every option reaches its library.
"""
from __future__ import annotations

import importlib.util

from ..errors import TrainError
from .options import ALL_LINEAR, FINETUNE, TrainConfig, parse_target_modules


def check_config(cfg: TrainConfig, *, has_validation: bool) -> None:
    """The settings that cannot work together, refused before anything is loaded."""
    if cfg.finetune not in FINETUNE:
        raise TrainError(f"finetune must be one of {', '.join(FINETUNE)}, not {cfg.finetune!r}")
    if cfg.batch_size % cfg.micro_batch_size:
        raise TrainError(f"batch_size {cfg.batch_size} must be a multiple of micro_batch_size {cfg.micro_batch_size}")
    if cfg.merge and cfg.finetune == "full":
        raise TrainError("merge folds a LoRA adapter into its base model; finetune: full already saves the whole "
                         "model")
    if not 0 <= cfg.warmup_ratio < 1:
        raise TrainError(f"warmup_ratio must be in [0, 1), not {cfg.warmup_ratio}")
    if cfg.load_best_model_at_end:
        if not has_validation:
            raise TrainError("load_best_model_at_end needs a validation split (set split.val_set_size in the build)")
        if cfg.save_steps % eval_steps(cfg):
            raise TrainError(f"load_best_model_at_end: save_steps ({cfg.save_steps}) must be a multiple of "
                             f"eval_steps ({eval_steps(cfg)}), so that every evaluated step is saved")
    package = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(cfg.report_to)
    if package and importlib.util.find_spec(package) is None and not (
            package == "tensorboard" and importlib.util.find_spec("tensorboardX")):
        raise TrainError(f"report_to {cfg.report_to} needs {package}: pip install {package}")


def eval_steps(cfg: TrainConfig) -> int:
    return cfg.eval_steps or cfg.save_steps


def training_arguments(cfg: TrainConfig, *, output_dir: str, dtype: str, has_validation: bool, cuda: bool,
                       silent: bool = False):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=cfg.micro_batch_size,
        per_device_eval_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=cfg.batch_size // cfg.micro_batch_size,
        num_train_epochs=cfg.num_epochs, max_steps=cfg.max_steps or -1,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler_type,
        # transformers 5 reads a warmup_steps below 1 as a ratio of the run's steps
        warmup_steps=cfg.warmup_steps if cfg.warmup_steps is not None else cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, optim=cfg.optim, max_grad_norm=cfg.max_grad_norm,
        bf16=dtype == "bf16", fp16=dtype == "fp16", use_cpu=not cuda,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        logging_strategy="steps", logging_steps=cfg.logging_steps,
        eval_strategy="steps" if has_validation else "no", eval_steps=eval_steps(cfg) if has_validation else None,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=cfg.load_best_model_at_end and has_validation,
        metric_for_best_model="eval_loss" if cfg.load_best_model_at_end else None, greater_is_better=False,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to], run_name=cfg.run_name,
        seed=cfg.seed, data_seed=cfg.seed, remove_unused_columns=False, disable_tqdm=silent,
        dataloader_num_workers=0)


def lora_config(cfg: TrainConfig, model):
    from peft import LoraConfig

    targets = parse_target_modules(cfg.lora_target_modules)
    if targets != ALL_LINEAR:
        targets = check_target_modules(model, targets)
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, use_dora=cfg.use_dora, use_rslora=cfg.use_rslora, bias="none",
                      task_type="CAUSAL_LM")


def check_target_modules(model, wanted: list[str]) -> list[str]:
    """Every wanted name is a linear layer of ``model`` (peft adapts ``nn.Linear`` and GPT-2's ``Conv1D``)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                     if isinstance(m, (torch.nn.Linear, Conv1D))})
    missing = [w for w in wanted if w not in linear]
    if missing or not wanted:
        raise TrainError(f"lora_target_modules: {', '.join(missing) or '(none)'} is not a linear layer of this model; "
                         f"its linear layers are: {', '.join(linear)} (or use all-linear)")
    return wanted
