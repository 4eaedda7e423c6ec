"""What goes beside a trained adapter or model: the build's tokenizer and chat template; and
``merge``, which folds a LoRA adapter into its base model for vLLM or ``from_pretrained``."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from ..errors import TrainError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "added_tokens.json", "chat_template.jinja", "vocab.json", "merges.txt")


def build_chat_template(manifest: dict) -> str | None:
    """The chat template a build rendered its rows with, when it used one other than the tokenizer's own."""
    if manifest.get("chat_template"):
        return manifest["chat_template"]
    recipe = manifest.get("recipe") or {}
    steps = [next(iter(t.items())) for t in recipe.get("transforms") or [] if t]
    chat = any(name == "template" and (opts or {}).get("name") == "chat" for name, opts in steps)
    source = recipe.get("chat_template")
    if not chat or not source:
        return None
    if "{" in source:
        return source
    p = Path(source)
    return p.read_text("utf-8") if p.is_file() else None


def save_tokenizer(manifest: dict, out: Path, *, quiet: bool = False) -> None:
    """The build's tokenizer files in ``out``, with the build's chat template as the tokenizer's own."""
    tok = manifest.get("tokenizer") or {}
    source = tok.get("source")
    if not source:
        return
    p = Path(source)
    files = [Path(f) for f in tok.get("files") or []] or ([p] if p.is_file() else [])
    copied = [f for f in files if f.is_file()]
    if not copied and p.is_dir():
        copied = [p / n for n in TOKENIZER_FILES if (p / n).is_file()]
    for f in copied:
        shutil.copy2(f, out / f.name)
    if not copied:
        try:
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(source, trust_remote_code=False).save_pretrained(str(out))
        except Exception as e:  # the adapter is still usable; say why the tokenizer is not beside it
            if not quiet:
                print(f"note: tokenizer not saved with the model ({type(e).__name__}: {e})")
            return
    template = build_chat_template(manifest)
    if template:
        set_chat_template(out, template)


def set_chat_template(folder: Path, template: str) -> None:
    """Write the template where transformers 5 reads it (chat_template.jinja) and where 4.x and vLLM's
    older loaders read it (tokenizer_config.json), so both agree."""
    (folder / "chat_template.jinja").write_text(template, "utf-8")
    config = folder / "tokenizer_config.json"
    data = json.loads(config.read_text("utf-8")) if config.is_file() else {}
    data["chat_template"] = template
    config.write_text(json.dumps(data, indent=2, ensure_ascii=False), "utf-8")


def copy_tokenizer(src: Path, out: Path) -> bool:
    found = [src / n for n in TOKENIZER_FILES if (src / n).is_file()]
    for f in found:
        shutil.copy2(f, out / f.name)
    return bool(found)


def merge(adapter_dir: str | Path, *, output: str | Path, base_model: str | None = None,
          trust_remote_code: bool = False, model=None) -> Path:
    """Fold the LoRA adapter in ``adapter_dir`` into its base model and write the merged model,
    the tokenizer and the chat template to ``output`` (a new folder).

    ``base_model`` defaults to the one the adapter was trained from; ``model`` is an already
    loaded peft model (``datakit train --merge`` passes its own).

    Example:
        >>> merge("build/alpaca-lora", output="build/alpaca-merged")
    """
    from .model import adapter_base, resolve_model

    adapter_dir, output = Path(adapter_dir), Path(output)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise TrainError(f"{adapter_dir} is not a LoRA adapter folder (no adapter_config.json)")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise TrainError(f"{output} already exists and is not empty; choose a new folder for the merged model")
    if model is None:
        name = base_model or adapter_base(adapter_dir)
        if not name:
            raise TrainError(f"{adapter_dir}: no base model recorded; pass the base model")
        model = _load_adapter(resolve_model(name), adapter_dir, trust_remote_code=trust_remote_code)
    merged = model.merge_and_unload()
    merged.config.use_cache = True  # inference: the cache was off only for training
    stage = output.parent / f".{output.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    stage.mkdir(parents=True)
    try:
        merged.save_pretrained(str(stage))
        if not copy_tokenizer(adapter_dir, stage):
            base = Path(base_model or adapter_base(adapter_dir) or "")
            if base.is_dir():
                copy_tokenizer(base, stage)
        if output.exists():
            output.rmdir()  # empty, checked above
        stage.rename(output)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return output


def _load_adapter(base_name: str, adapter_dir: Path, *, trust_remote_code: bool):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    try:
        # the base's own dtype ("auto"): a bf16 model merges and saves as bf16
        base = AutoModelForCausalLM.from_pretrained(base_name, dtype="auto", trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise TrainError(f"cannot load base model {base_name}: {str(e).strip().splitlines()[0]}") from None
    return PeftModel.from_pretrained(base, str(adapter_dir))
