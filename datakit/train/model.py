"""Loading the base model for ``datakit train``: where it is, its precision and quantization, and
whether its vocabulary is the one the build was tokenized with."""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import TrainError
from .options import TrainConfig

# A hub id is NAME or NAMESPACE/NAME: letters, digits, '-', '_', '.'; no leading '.', no '..'.
HUB_ID = re.compile(r"^(?!.*\.\.)[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def resolve_model(name: str, *, what: str = "model") -> str:
    """A local folder that exists, or a hub id. A path that does not exist fails at once, without
    asking the hub: a name is sent to the hub only when it has a hub id's shape and its first part
    is not a local folder (``models/llama-7b`` beside a ``models/`` folder is a mistyped path)."""
    p = Path(name).expanduser()
    if p.exists():
        return str(p)
    first = name.split("/", 1)[0]
    pathlike = name.startswith(("/", ".", "~")) or "\\" in name or name.endswith("/") or (
        "/" in name and Path(first).expanduser().is_dir())
    if pathlike or not HUB_ID.match(name):
        raise TrainError(f"{what} {name} does not exist (no such folder)")
    return name


def precision(cfg: TrainConfig, *, cuda: bool, bf16_ok: bool) -> str:
    """'bf16', 'fp16' or 'fp32': the config's choice, or the hardware's when it makes none."""
    if cfg.bf16 and cfg.fp16:
        raise TrainError("bf16 and fp16 are both on; choose one")
    if cfg.bf16:
        if cuda and not bf16_ok:
            raise TrainError("bf16 is on but this GPU does not support bfloat16; use fp16")
        return "bf16"
    if cfg.fp16:
        if not cuda:
            raise TrainError("fp16 mixed precision needs a CUDA GPU; on the CPU use bf16 or fp32")
        return "fp16"
    if cfg.bf16 is None and cfg.fp16 is None and cuda:
        return "bf16" if bf16_ok else "fp16"
    return "fp32"


def quantization_config(cfg: TrainConfig, dtype: str):
    """QLoRA's 4-bit NF4 with double quantization, computing in the training dtype."""
    import torch
    from transformers import BitsAndBytesConfig

    compute = getattr(torch, DTYPES["bf16" if dtype == "fp32" else dtype])
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def check_quantization(cfg: TrainConfig, *, cuda: bool) -> None:
    if not cfg.load_in_4bit:
        return
    if cfg.finetune == "full":
        raise TrainError("load_in_4bit trains a LoRA adapter on frozen 4-bit weights; it does not go with "
                         "finetune: full")
    if not cuda:
        raise TrainError("load_in_4bit (QLoRA) needs a CUDA GPU: bitsandbytes' 4-bit weights do not train on "
                         "this machine's CPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TrainError("load_in_4bit needs bitsandbytes: pip install bitsandbytes") from None


def load_base(name: str, cfg: TrainConfig, *, dtype: str, quantize):
    """The model, on its way to training: precision, attention kernel, no cache, no remote code."""
    import torch
    from transformers import AutoModelForCausalLM

    # full fine-tuning in fp16 keeps fp32 master weights (the GradScaler refuses fp16 gradients)
    load = "fp32" if cfg.finetune == "full" and dtype == "fp16" else dtype
    kwargs = {"dtype": getattr(torch, DTYPES[load]), "trust_remote_code": cfg.trust_remote_code}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    if quantize is not None:
        kwargs.update(quantization_config=quantize, device_map={"": torch.cuda.current_device()})
    try:
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except (OSError, ValueError, ImportError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrainError(f"cannot load model {name}: {first}") from None
    # a cache during training disables the packed-row masks (see collator.py) and costs memory
    model.config.use_cache = False
    return model


def check_vocabulary(manifest: dict, model, *, data: Path, model_name: str) -> None:
    """Refuse a build whose tokenizer is not the model's: more tokens than the model has embeddings,
    or, when the model folder has its own ``tokenizer.json``, a token that the two map to different ids."""
    tok = manifest.get("tokenizer") or {}
    rows = model.get_input_embeddings().num_embeddings
    size = tok.get("vocab_size")
    if size and size > rows:
        raise TrainError(f"{data}: built with tokenizer {tok.get('source')} ({size} tokens), but model "
                         f"{model_name} has {rows} embeddings: the build's tokenizer does not match the model")
    theirs, ours = _vocab(Path(model_name)), _vocab(Path(tok.get("source") or ""))
    if theirs is None or ours is None:
        return
    for token, i in ours.items():
        j = theirs.get(token)
        if j is not None and j != i:
            raise TrainError(f"{data}: the build's tokenizer ({tok.get('source')}) gives {token!r} id {i}, the "
                             f"model's tokenizer ({model_name}) gives it id {j}: the build's tokenizer does not "
                             f"match the model")


def _vocab(p: Path) -> dict | None:
    """token -> id of a tokenizer.json (a folder's, or the file itself), read without running code."""
    f = p / "tokenizer.json" if p.is_dir() else p
    if f.name != "tokenizer.json" or not f.is_file():
        return None
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(f)).get_vocab(with_added_tokens=True)
    except Exception:  # an unreadable tokenizer.json is the tokenizer loader's error to report, not ours
        return None


def check_token_ids(ds, vocab_size: int, data: Path) -> None:
    """Every split has input_ids and labels, and no id reaches past the embedding table."""
    import numpy as np

    for split, d in ds.items():
        missing = [c for c in ("input_ids", "labels") if c not in d.column_names]
        if missing:
            raise TrainError(f"{data}: split '{split}' has no {' or '.join(missing)} column; build it with "
                             f"`datakit build` (columns input_ids, attention_mask, labels)")
        column = d.data.column("input_ids").combine_chunks()
        ids = column.flatten().to_numpy()
        if len(ids) and int(ids.max()) >= vocab_size:
            at = int(np.argmax(ids >= vocab_size))
            offsets = column.offsets.to_numpy() - column.offsets[0].as_py()
            row = int(np.searchsorted(offsets, at, side="right") - 1)
            raise TrainError(f"{data}: split '{split}' row {row} has token id {int(ids[at])}, beyond the model's "
                             f"vocabulary of {vocab_size}: the build's tokenizer does not match the model")


def adapter_base(adapter_dir: Path) -> str | None:
    """The base model an adapter folder was trained from (peft's adapter_config, or datakit_train.json)."""
    for name, key in (("datakit_train.json", "model"), ("adapter_config.json", "base_model_name_or_path")):
        f = adapter_dir / name
        if f.is_file():
            value = json.loads(f.read_text("utf-8")).get(key)
            if value:
                return value
    return None
