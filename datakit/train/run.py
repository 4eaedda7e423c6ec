"""``train``: LoRA, QLoRA or full fine-tuning of a causal LM on a built folder, with transformers'
Trainer and peft doing the work.

It consumes exactly what ``datakit build`` writes (SFT, pretraining, packed or not). The dtype
follows the hardware unless set: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on the
CPU. torch and peft are imported here only, so the base install stays light.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatakitError, TrainError
from .options import TrainConfig


def require() -> None:
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise TrainError(f"datakit train needs torch and peft ({e.name} is missing): "
                         f"pip install 'datakit[train]'") from None


def hardware_dtype() -> str:
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict
    log_history: list
    model: object
    merged_dir: Path | None = None


def train(data: str | Path, *, model: str | None = None, config: TrainConfig | None = None,
          output_dir: str | Path | None = None, resume_from_checkpoint: str | bool | None = None,
          silent: bool = False) -> TrainResult:
    """Fine-tune ``model`` (default: ``config.base_model``) on the built folder ``data``.

    Writes the adapter (or the full model), the build's tokenizer and chat template, the trainer
    state and ``loss.png`` to the output folder; with ``config.merge`` also ``merged/``.

    Example:
        >>> train("build/alpaca", model="path/to/llama", config=TrainConfig(max_steps=100))
    """
    require()
    from ..writers.manifest import load, read_manifest
    from .arguments import check_config
    from .model import resolve_model
    from .quiet import silenced

    cfg = config or TrainConfig()
    name = model or cfg.base_model
    if not name:
        raise TrainError("no base model: pass model= (or set train.base_model in the recipe)")
    data = Path(data)
    manifest = read_manifest(data)
    with silenced(silent):
        ds = load(data)
        check_config(cfg, has_validation="validation" in ds)
        name = resolve_model(name)
        default_out = data.parent / f"{data.name}-{'full' if cfg.finetune == 'full' else 'lora'}"
        out = Path(output_dir or cfg.output_dir or default_out)
        return _run(ds, manifest, cfg, data=data, name=name, out=out, resume=resume_from_checkpoint, silent=silent)


def _prepare_model(cfg: TrainConfig, name: str, *, dtype: str, cuda: bool):
    from peft import get_peft_model, prepare_model_for_kbit_training

    from .arguments import lora_config
    from .model import check_quantization, load_base, quantization_config

    check_quantization(cfg, cuda=cuda)
    quantize = quantization_config(cfg, dtype) if cfg.load_in_4bit else None
    base = load_base(name, cfg, dtype=dtype, quantize=quantize)
    if quantize is not None:
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        # transformers 5 renamed it activation checkpointing; 4.x only has the old name
        enable = getattr(base, "activation_checkpointing_enable", None) or base.gradient_checkpointing_enable
        enable()
        base.enable_input_require_grads()
    if cfg.finetune == "full":
        return base, base
    return base, get_peft_model(base, lora_config(cfg, base))


def _collator(ds, manifest: dict, model, *, cuda: bool):
    from .collator import Collator, PackedCollator, check_packed_attention, is_packed

    tok = manifest.get("tokenizer") or {}
    pad_id = next((i for i in (tok.get("pad_id"), tok.get("eos_id")) if i is not None), 0)
    multiple = 8 if cuda else None  # tensor cores want multiples of 8; the CPU gains nothing from it
    if not is_packed(ds["train"].column_names):
        return Collator(pad_id=int(pad_id), pad_to_multiple_of=multiple), False
    attn = model.config._attn_implementation
    check_packed_attention(attn)
    return PackedCollator(pad_id=int(pad_id), flash=attn.startswith("flash"), pad_to_multiple_of=multiple), True


def _with_lengths(ds):
    """A ``length`` column (from the Arrow offsets, no row decoding) for group_by_length's sampler."""
    import numpy as np

    column = ds.data.column("input_ids").combine_chunks()
    return ds.add_column("length", np.diff(column.offsets.to_numpy()).tolist())


def _run(ds, manifest: dict, cfg: TrainConfig, *, data: Path, name: str, out: Path, resume, silent: bool):
    import torch
    from transformers import PrinterCallback, Trainer

    from .arguments import training_arguments
    from .export import merge, save_tokenizer
    from .model import check_token_ids, check_vocabulary, precision
    from .plot import PLOT, plot_callback, write_plot

    cuda = torch.cuda.is_available()
    dtype = precision(cfg, cuda=cuda, bf16_ok=cuda and torch.cuda.is_bf16_supported())
    base, trained = _prepare_model(cfg, name, dtype=dtype, cuda=cuda)
    check_vocabulary(manifest, base, data=data, model_name=name)
    check_token_ids(ds, base.get_input_embeddings().num_embeddings, data)
    collator, packed = _collator(ds, manifest, base, cuda=cuda)
    has_val = "validation" in ds
    train_ds = _with_lengths(ds["train"]) if cfg.group_by_length else ds["train"]
    args = training_arguments(cfg, output_dir=str(out), dtype=dtype, has_validation=has_val, cuda=cuda,
                              silent=silent)
    title = f"{Path(name).name} on {data.name}"
    trainer = Trainer(model=trained, args=args, train_dataset=train_ds,
                      eval_dataset=ds["validation"] if has_val else None, data_collator=collator,
                      callbacks=[plot_callback(title)])
    if silent:  # with its bars off, the Trainer prints every log dict instead
        trainer.remove_callback(PrinterCallback)
    result = trainer.train(resume_from_checkpoint=resume or None)
    metrics = dict(result.metrics)
    if has_val:
        metrics.update(_final_eval(trainer))
    out.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(out))
    trainer.save_state()
    write_plot(trainer.state.log_history, out / PLOT, title=title)
    save_tokenizer(manifest, out, quiet=silent)
    (out / "datakit_train.json").write_text(json.dumps({
        "data": str(data), "model": name, "dtype": dtype, "packed": packed,
        "attn_implementation": base.config._attn_implementation, "config": dataclasses.asdict(cfg),
        "metrics": metrics, "inputs_fingerprint": manifest.get("inputs_fingerprint")}, indent=2, default=str))
    merged = None
    if cfg.merge and cfg.finetune == "lora":
        merged = merge(out, output=out / "merged", base_model=name, trust_remote_code=cfg.trust_remote_code)
    return TrainResult(output_dir=out, metrics=metrics, log_history=trainer.state.log_history, model=trained,
                       merged_dir=merged)


def _final_eval(trainer) -> dict:
    """Evaluate after the last step, unless the schedule has just done so."""
    history = trainer.state.log_history
    done = [h for h in history if "eval_loss" in h and h.get("step") == trainer.state.global_step]
    if done:
        return {k: v for k, v in done[-1].items() if k.startswith("eval_")}
    return trainer.evaluate()


def config_from(recipe_path: str | None, overrides: dict) -> tuple[TrainConfig, str | None]:
    """The recipe's ``train:`` section (if any) with command-line ``overrides`` on top.

    Returns (config, the recipe's output folder).
    """
    base: dict = {}
    data = None
    if recipe_path:
        from ..recipe import load_recipe

        recipe = load_recipe(recipe_path)
        base = dataclasses.asdict(recipe.train) if recipe.train else {}
        data = recipe.output
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig(**base), data
    except TypeError as e:
        raise DatakitError(f"train settings: {e}") from None
