"""``TrainConfig``: every ``datakit train`` option and its default, in one place.

The recipe's ``train:`` section, the command-line flags (generated from these fields by
``cli_options``) and the JSON schema all follow this dataclass; a test keeps the schema in step.
Nothing here imports torch, so recipes load without the ``[train]`` extra.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

ALL_LINEAR = "all-linear"
FINETUNE = ("lora", "full")
REPORT_TO = ("none", "tensorboard", "wandb")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flex_attention", "flash_attention_2", "flash_attention_3")
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "warmup_stable_decay")


def _opt(default=None, help: str = "", *, choices: tuple | None = None, flag: str | None = None, factory=None):
    meta = {"help": help, "choices": choices, "flag": flag}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    base_model: str | None = _opt(None, "Base model: a local folder or a hub id.", flag="--model")
    output_dir: str | None = _opt(None, "Where the adapter (or model), tokenizer, checkpoints and loss.png go "
                                        "(default: beside the build, named BUILD-lora or BUILD-full).")
    finetune: str = _opt("lora", "lora trains an adapter; full trains every weight.", choices=FINETUNE)
    trust_remote_code: bool = _opt(False, "Let the model folder run its own Python code (off: never).")
    # alpaca-lora's schedule: 128 rows per step, micro batches of 4, 3 epochs at 3e-4
    batch_size: int = _opt(128, "Rows per optimizer step; accumulation = batch_size / micro_batch_size.")
    micro_batch_size: int = _opt(4, "Rows per device step.")
    num_epochs: float = _opt(3, "Epochs over the train split.")
    max_steps: int | None = _opt(None, "Stop after this many optimizer steps (overrides num_epochs).")
    learning_rate: float = _opt(3e-4, "Peak learning rate.")
    lr_scheduler_type: str = _opt("linear", "Learning-rate schedule after the warm-up.", choices=LR_SCHEDULERS)
    # a ratio scales with the run: 3% of a 21-step run is 1 step, where a fixed 100 steps would be the whole run
    warmup_ratio: float = _opt(0.03, "Fraction of the optimizer steps spent warming up.")
    warmup_steps: int | None = _opt(None, "Warm-up steps; when set, replaces warmup_ratio.")
    weight_decay: float = _opt(0.0, "AdamW weight decay.")
    optim: str = _opt("adamw_torch", "Optimizer name as transformers spells it (adamw_torch_fused, "
                                     "paged_adamw_8bit, adafactor, ...).")
    max_grad_norm: float = _opt(1.0, "Gradient clipping norm (0 turns clipping off).")
    lora_r: int = _opt(8, "LoRA rank.")
    lora_alpha: int = _opt(16, "LoRA alpha (the update is scaled by alpha / r, or alpha / sqrt(r) with rsLoRA).")
    lora_dropout: float = _opt(0.05, "Dropout on the LoRA input.")
    lora_target_modules: list[str] | str = _opt(
        help="Linear layers that get an adapter: names, comma-separated on the command line, or all-linear.",
        factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    use_dora: bool = _opt(False, "Weight-decomposed LoRA (DoRA).")
    use_rslora: bool = _opt(False, "Rank-stabilized LoRA: scale by alpha / sqrt(r).")
    load_in_4bit: bool = _opt(False, "QLoRA: load the base model in 4-bit NF4 with bitsandbytes (CUDA only).")
    bf16: bool | None = _opt(None, "bfloat16 mixed precision (default: on for GPUs that support it).")
    fp16: bool | None = _opt(None, "float16 mixed precision (default: on for GPUs without bfloat16).")
    attn_implementation: str | None = _opt(None, "Attention kernel (default: transformers' choice, sdpa).",
                                           choices=ATTN_IMPLEMENTATIONS)
    group_by_length: bool = _opt(False, "Batch rows of similar length together (less padding).")
    gradient_checkpointing: bool = _opt(False, "Recompute activations in the backward pass to save memory.")
    logging_steps: int = _opt(10, "Log the loss and learning rate every N steps.")
    eval_steps: int | None = _opt(None, "Evaluate every N steps (default: save_steps) and at the end.")
    save_steps: int = _opt(200, "Save a checkpoint (and loss.png) every N steps.")
    save_total_limit: int | None = _opt(3, "Keep at most this many checkpoints (null: all).")
    load_best_model_at_end: bool = _opt(False, "End with the checkpoint of lowest eval loss (needs a validation "
                                               "split; eval_steps must divide save_steps).")
    report_to: str = _opt("none", "Where metrics go besides loss.png.", choices=REPORT_TO)
    run_name: str | None = _opt(None, "The run's name in tensorboard or wandb.")
    seed: int = _opt(42, "Seed for adapter initialisation, data order and dropout.")
    merge: bool = _opt(False, "After training, also write the merged model to OUTPUT_DIR/merged.")


def defaults() -> dict:
    """Every field's default value, by name."""
    return {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
            for f in dataclasses.fields(TrainConfig)}


def _kind(f: dataclasses.Field) -> str:
    t = str(f.type)
    if t.startswith("bool"):
        return "bool"
    for name in ("list", "int", "float"):
        if t.startswith(name):
            return name
    return "str"


def cli_options():
    """click options for every field, with the defaults taken from ``TrainConfig``.

    Each option defaults to ``None`` (not given), so only the flags a user types override the
    recipe's ``train:`` section; the help text shows the dataclass default.
    """
    import click

    made = []
    for f, default in zip(dataclasses.fields(TrainConfig), defaults().values()):
        meta, kind = f.metadata, _kind(f)
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        shown = ",".join(default) if isinstance(default, list) else default
        shown = {True: "on", False: "off"}.get(shown, shown) if isinstance(shown, bool) else shown
        text = meta["help"] + ("" if default is None else f" [default: {shown}]")
        if kind == "bool":
            decl = f"{flag}/--no-{flag[2:]}"
            made.append(click.option(decl, f.name, default=None, help=text))
            continue
        type_ = {"int": int, "float": float}.get(kind, str)
        if meta["choices"]:
            type_ = click.Choice(meta["choices"])
        made.append(click.option(flag, f.name, type=type_, default=None, help=text))

    def apply(fn):
        for option in reversed(made):
            fn = option(fn)
        return fn

    return apply


def parse_target_modules(value: str | list[str]) -> list[str] | str:
    """``all-linear`` as peft spells it, or a list of module names (a comma-separated string too)."""
    if isinstance(value, str):
        if value.strip() == ALL_LINEAR:
            return ALL_LINEAR
        return [m.strip() for m in value.split(",") if m.strip()]
    return list(value)
