"""Recipes: YAML -> JSON-Schema validation (every problem reported together) -> a typed ``Recipe``.

The dataclasses below hold every default; ``schemas/recipe.schema.json`` documents the same
defaults for editors, and a test keeps the two in agreement.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DatakitError, RecipeError
from .recipe_files import parse_yaml
from .recipe_schema import schema, validate_dict  # noqa: F401  (schema is public)
from .train.options import TrainConfig  # the train: section's options live with the trainer

SFT_FORMATS = ("alpaca", "prompt_completion", "messages", "sharegpt")
BUILD_FORMAT = "build"  # a datakit build folder: rows already tokenized (sources/build.py)
BUILTIN_TEMPLATES = ("alpaca", "alpaca_short", "alpaca_legacy")
# the fields `columns:` may rename, per format (sources/formats.py reads them under these names)
COLUMN_KEYS = {"text": ("text",), "alpaca": ("instruction", "input", "output", "system", "history"),
               "prompt_completion": ("prompt", "completion"), "messages": ("messages", "role", "content"),
               "sharegpt": ("conversations", "from", "value")}


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    path: str
    format: str = "text"
    columns: dict[str, str] = field(default_factory=dict)
    document_separator: str | None = None
    name: str | None = None
    weight: float | None = None
    repeat: float | None = None
    split: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.path

    @property
    def is_build(self) -> bool:
        return self.format == BUILD_FORMAT


@dataclass(frozen=True, kw_only=True)
class TokenizeOptions:
    add_special_tokens: bool | None = None
    cutoff_len: int | None = None
    overlong: str = "truncate"
    add_eos_token: bool = True
    train_on_inputs: bool = False
    train_on: str = "all_assistant"
    inference_mismatch: str = "count"
    parse_special_tokens: bool = False


@dataclass(frozen=True, kw_only=True)
class PackOptions:
    block_size: int
    eos: str = "per_document"
    remainder: str = "drop"
    isolate_documents: bool = False
    strategy: str = "bfd"
    pad_to_block_size: bool = True


@dataclass(frozen=True, kw_only=True)
class TemplateOptions:
    name: str


@dataclass(frozen=True, kw_only=True)
class DedupOptions:
    mode: str = "exact"
    fields: list[str] | None = None
    threshold: float = 0.8
    num_perm: int = 128
    ngram: int = 5
    action: str = "drop"


@dataclass(frozen=True, kw_only=True)
class FilterOptions:
    min_chars: int | None = None
    max_chars: int | None = None
    min_tokens: int | None = None
    max_tokens: int | None = None
    drop_empty_response: bool = True
    max_repeated_line_fraction: float | None = None
    max_repeated_ngram_fraction: float | None = None
    min_alpha_fraction: float | None = None
    rejects: str | None = None


@dataclass(frozen=True, kw_only=True)
class SplitConfig:
    val_set_size: float = 0
    seed: int = 42
    shuffle: bool = True


OUTPUT_FORMATS = ("hf", "parquet", "megatron", "mds")


@dataclass(frozen=True, kw_only=True)
class ParquetOutput:
    shard_size: int | str = "500MB"
    compression: str = "zstd"


@dataclass(frozen=True, kw_only=True)
class MDSOutput:
    shard_size: int | str = "64MB"


@dataclass(frozen=True, kw_only=True)
class OutputOptions:
    """What ``output:`` asks for besides its folder: the formats, and their options."""
    formats: list[str] = field(default_factory=lambda: ["hf"])
    parquet: ParquetOutput = field(default_factory=ParquetOutput)
    mds: MDSOutput = field(default_factory=MDSOutput)


STEP_OPTIONS: dict[str, type] = {
    "template": TemplateOptions,
    "tokenize": TokenizeOptions,
    "pack": PackOptions,
    "dedup": DedupOptions,
    "filter": FilterOptions,
}


@dataclass(frozen=True, kw_only=True)
class StepConfig:
    name: str
    options: Any


@dataclass(frozen=True, kw_only=True)
class Recipe:
    tokenizer: str
    sources: list[SourceConfig]
    transforms: list[StepConfig]
    output: str
    output_options: OutputOptions = field(default_factory=OutputOptions)
    split: SplitConfig = field(default_factory=SplitConfig)
    chat_template: str | None = None
    trust_remote_code: bool = False
    train: TrainConfig | None = None
    path: str | None = None
    kind: str | None = None  # sft | pretrain, when build sources say it (their manifests); else from the formats

    @property
    def is_sft(self) -> bool:
        if self.kind is not None:
            return self.kind == "sft"
        return any(s.format in SFT_FORMATS for s in self.sources)

    def step(self, name: str):
        """The options of the first step called ``name``, or None."""
        return next((s.options for s in self.transforms if s.name == name), None)


ONCE = ("template", "tokenize", "pack")  # steps that make the rows' shape: a second one has nothing to do


def _semantic_problems(data: dict, built: dict[int, str]) -> list[str]:
    """Checks the schema cannot express: step order and format/step agreement. ``built`` holds
    the kind (sft, pretrain) of every ``format: build`` source, by its place in ``sources``."""
    problems = []
    formats = {s.get("format", "text") for s in data["sources"]} - {BUILD_FORMAT}
    steps = [next(iter(t)) for t in data.get("transforms") or []]
    sft = bool(formats & set(SFT_FORMATS)) or "sft" in built.values()
    if sft and ("text" in formats or "pretrain" in built.values()):
        problems.append("sources: text and instruction formats cannot be mixed in one recipe"
                        + (" (a build source holds the other kind)" if built else ""))
    if not formats:  # every source is a build: its rows are tokenized already
        return problems + _built_step_problems(steps, sft=sft) + _source_problems(data)
    if "tokenize" not in steps:
        problems.append("transforms: a `tokenize` step is required")
    for i, name in enumerate(steps):
        if name in ONCE and name in steps[:i]:
            problems.append(f"transforms[{i}].{name}: a recipe has one `{name}` step (the first is "
                            f"transforms[{steps.index(name)}])")
        if name == "pack":
            problems += _pack_problems(data["transforms"][i]["pack"], i, sft=sft)
            if "tokenize" not in steps[:i]:
                problems.append(f"transforms[{i}].pack: must come after `tokenize`")
        if name == "template":
            if not sft:
                problems.append(f"transforms[{i}].template: templates apply to instruction formats "
                                f"({', '.join(SFT_FORMATS)})")
            if "tokenize" in steps[:i]:
                problems.append(f"transforms[{i}].template: must come before `tokenize`")
    for i, name in enumerate(steps):
        if name in ("dedup", "filter") and {"template", "tokenize"} & set(steps[:i]):
            problems.append(f"transforms[{i}].{name}: must come before `template` and `tokenize` "
                            f"(it reads the source fields)")
    if sft and "template" not in steps:
        problems.append("transforms: instruction sources need a `template` step (e.g. `- template: alpaca`)")
    if not sft and "pack" not in steps:
        problems.append("transforms: text sources need a `pack` step (e.g. `- pack: {block_size: 1024}`)")
    output = data["output"]
    if sft and isinstance(output, dict) and "megatron" in _formats(output):
        problems.append("output.formats: megatron holds pretraining documents (Megatron's indexed dataset has "
                        "no labels); write instruction data as mds (llm-foundry), parquet or hf")
    if sft and isinstance(output, dict) and "mds" in _formats(output) and "pack" in steps:
        problems.append("output.formats: mds holds instruction rows one by one for llm-foundry, which packs "
                        "them itself (packing_ratio); drop `pack` from transforms, or mds from the formats")
    return problems + _source_problems(data)


def _source_problems(data: dict) -> list[str]:
    problems = []
    for i, s in enumerate(data["sources"]):
        fmt = s.get("format", "text")
        if s.get("document_separator") is not None and fmt != "text":
            problems.append(f"sources[{i}].document_separator: only applies to format text")
        if s.get("weight") is not None and s.get("repeat") is not None:
            problems.append(f"sources[{i}]: give `weight` or `repeat`, not both")
        if s.get("split") is not None and fmt != BUILD_FORMAT:
            problems.append(f"sources[{i}].split: only applies to format build (a split of a datakit build)")
        if s.get("columns") and fmt == BUILD_FORMAT:
            problems.append(f"sources[{i}].columns: a build's rows have datakit's columns already")
        elif isinstance(s.get("columns"), dict) and fmt in COLUMN_KEYS:
            for key in s["columns"]:
                if key not in COLUMN_KEYS[fmt]:
                    problems.append(f"sources[{i}].columns.{key}: format {fmt} has no field {key!r} to rename "
                                    f"(its fields: {', '.join(COLUMN_KEYS[fmt])})")
    return problems


def _built_step_problems(steps: list[str], *, sft: bool) -> list[str]:
    """Steps of a recipe whose sources are all builds: only instruction rows' `pack` applies (it
    runs after the split); every other step reads text, which tokenized rows no longer have."""
    problems = []
    for i, name in enumerate(steps):
        if name == "pack" and sft:
            continue
        why = ("pretraining builds hold blocks already; pack their text sources again to change block_size"
               if name == "pack" else "it reads text, and every source is a build (rows tokenized already)")
        problems.append(f"transforms[{i}].{name}: {why}")
    return problems


def _build_kinds(data: dict, base: Path) -> tuple[dict[int, str], list[str]]:
    """The kind (sft, pretrain) of each ``format: build`` source, read from its manifest."""
    from .writers.manifest import read_manifest

    kinds, problems = {}, []
    for i, s in enumerate(data["sources"]):
        if s.get("format") != BUILD_FORMAT:
            continue
        path = Path(_join(base, s["path"]))
        if not (path / "manifest.json").is_file() and (path.parent / "manifest.json").is_file():
            problems.append(f"sources[{i}].path: {s['path']} is a split of the build {path.parent}: write "
                            f"`path: {path.parent}` and `split: {path.name}`")
            continue
        try:
            kinds[i] = read_manifest(path)["kind"]
        except DatakitError as e:
            problems.append(f"sources[{i}].path: {e}")
        except KeyError:
            problems.append(f"sources[{i}].path: {s['path']}'s manifest has no kind; rebuild it")
    return kinds, problems


PACK_KEYS = {False: ("eos", "remainder", "isolate_documents"), True: ("strategy", "pad_to_block_size")}


def _pack_problems(options: dict, i: int, *, sft: bool) -> list[str]:
    """Keys of `pack` that belong to the other path: instruction rows are packed whole, text is cut."""
    kind, other = ("instruction rows", "text") if sft else ("text documents", "instruction")
    return [f"transforms[{i}].pack.{key}: applies to {other} sources, not {kind}"
            for key in PACK_KEYS[not sft] if key in (options or {})]


def _formats(output: dict) -> list[str]:
    formats = output.get("formats", OutputOptions().formats)
    return [formats] if isinstance(formats, str) else list(formats)


def _output(base: Path, output: str | dict) -> tuple[str, OutputOptions]:
    """``output: build/x`` or ``output: {path: build/x, formats: [...], parquet: {...}, mds: {...}}``."""
    if isinstance(output, str):
        return _join(base, output), OutputOptions()
    options = OutputOptions(formats=_formats(output), parquet=ParquetOutput(**output.get("parquet") or {}),
                            mds=MDSOutput(**output.get("mds") or {}))
    return _join(base, output["path"]), options


def _resolve(base: Path, value: str) -> str:
    """A relative path is taken from the recipe's folder; hub ids and absolute paths stay as they are."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    candidate = Path(os.path.normpath(base / p))
    if candidate.exists() or any(ch in value for ch in "*?[") or value.startswith("."):
        return str(candidate)
    return value


def from_dict(data: Any, *, base_dir: str | Path = ".", path: str | None = None) -> Recipe:
    """Validate ``data`` (a parsed recipe) and build a ``Recipe``; relative paths resolve against base_dir."""
    where = path or "recipe"
    if not isinstance(data, dict):
        raise RecipeError(where, ["the recipe must be a mapping of keys (tokenizer, sources, transforms, output)"])
    problems = validate_dict(data)
    base = Path(base_dir)
    built: dict[int, str] = {}
    if not problems:
        built, problems = _build_kinds(data, base)
    if not problems:
        problems = _semantic_problems(data, built)
    if problems:
        raise RecipeError(where, problems)
    sources = []
    for s in data["sources"]:
        s = dict(s)
        s["path"] = _join(base, s["path"])
        sources.append(SourceConfig(**s))
    steps = []
    for t in data.get("transforms") or []:
        name, opts = next(iter(t.items()))
        if name == "template":
            opts = {"name": _template_name(base, opts)}
        if name == "filter" and (opts or {}).get("rejects"):
            opts = {**opts, "rejects": _join(base, opts["rejects"])}
        steps.append(StepConfig(name=name, options=STEP_OPTIONS[name](**(opts or {}))))
    chat_template = data.get("chat_template")
    if chat_template and chat_template.endswith((".jinja", ".j2")) and "{" not in chat_template:
        chat_template = _join(base, chat_template)
    train = TrainConfig(**data["train"]) if data.get("train") is not None else None
    output, output_options = _output(base, data["output"])
    return Recipe(
        tokenizer=_resolve(base, data["tokenizer"]),
        sources=sources,
        transforms=steps,
        output=output,
        output_options=output_options,
        split=SplitConfig(**(data.get("split") or {})),
        chat_template=chat_template,
        trust_remote_code=data.get("trust_remote_code", False),
        train=train,
        path=path,
        kind=next(iter(built.values())) if built else None,
    )


def _template_name(base: Path, name: str) -> str:
    if name in BUILTIN_TEMPLATES or name == "chat":
        return name
    return _join(base, name)


def _join(base: Path, value: str) -> str:
    p = Path(value).expanduser()
    return str(p) if p.is_absolute() else os.path.normpath(base / p)


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a YAML recipe file. Raises RecipeError listing every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise RecipeError(str(p), ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(str(p), [f"cannot read: {e}"]) from None
    data = parse_yaml(text, str(p))
    return from_dict(data, base_dir=p.resolve().parent, path=str(p))


def to_dict(recipe: Recipe) -> dict:
    """The resolved recipe as plain data, for the manifest."""
    out = dataclasses.asdict(recipe)
    out["transforms"] = [{s["name"]: s["options"]} for s in out["transforms"]]
    if out["kind"] is None:  # the kind follows from the formats: recipes without build sources stay as they were
        del out["kind"]
    for source in out["sources"]:
        if source["split"] is None:
            del source["split"]
    return out
