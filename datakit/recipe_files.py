"""Reading a recipe file safely, and checking that the files it names are there.

``parse_yaml`` refuses a document whose aliases expand past MAX_YAML_VALUES values before
anything walks it: 761 bytes of nested aliases (a "billion laughs") expand to 10^9 values, which
schema validation would visit one by one for minutes. ``check_files`` is what ``datakit validate``
adds to the schema: the inputs, the tokenizer and the templates exist.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import DatakitError, RecipeError

if TYPE_CHECKING:
    from .recipe import Recipe

MAX_YAML_VALUES = 100_000  # a recipe has tens to a few thousand; a "billion laughs" has 10^9


def _count_values(node, where: str) -> int:
    """How many values ``node`` holds once its aliases are expanded, without expanding them (a
    node shared through aliases is counted once per use from its own size). Raises RecipeError
    past MAX_YAML_VALUES, and for an alias that contains itself."""
    sizes: dict[int, int] = {}
    busy: set[int] = set()

    def size(n) -> int:
        if id(n) in sizes:
            return sizes[id(n)]
        if id(n) in busy:
            raise RecipeError(f"{where}:{n.start_mark.line + 1}", ["a YAML alias refers to itself"])
        busy.add(id(n))
        total = 1
        if isinstance(n, yaml.MappingNode):
            children = [c for pair in n.value for c in pair]
        else:
            children = n.value if isinstance(n, yaml.SequenceNode) else []
        for child in children:
            total += size(child)
            if total > MAX_YAML_VALUES:
                raise RecipeError(f"{where}:{n.start_mark.line + 1}", [
                    f"YAML aliases expand this recipe past {MAX_YAML_VALUES:,} values (nested aliases?); "
                    "write the values out instead"])
        busy.discard(id(n))
        sizes[id(n)] = total
        return total

    return size(node)


def _refuse_duplicate_keys(node, where: str) -> None:
    """A key given twice in one mapping: YAML loaders keep the last one without a word, which
    hides a typo or a merge gone wrong (``split:`` twice), so the recipe names both lines."""
    seen_nodes: set[int] = set()
    todo = [node]
    while todo:
        n = todo.pop()
        if id(n) in seen_nodes:  # aliases share nodes
            continue
        seen_nodes.add(id(n))
        if isinstance(n, yaml.MappingNode):
            first: dict = {}
            for key, value in n.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in first:
                        raise RecipeError(f"{where}:{key.start_mark.line + 1}", [
                            f"key {key.value!r} appears twice in one mapping (lines {first[key.value]} and "
                            f"{key.start_mark.line + 1}); keep one"])
                    first[key.value] = key.start_mark.line + 1
                todo.append(value)
        elif isinstance(n, yaml.SequenceNode):
            todo.extend(n.value)


def parse_yaml(text: str, where: str) -> Any:
    """YAML text -> plain data, with safe types only; refuses, before anything else looks at it,
    a document whose aliases expand past MAX_YAML_VALUES values."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _count_values(node, where)
        _refuse_duplicate_keys(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        raise RecipeError(at, [f"invalid YAML: {getattr(e, 'problem', None) or e}"]) from None
    finally:
        loader.dispose()


def _hub_id(spec: str) -> bool:
    """``org/name`` or ``name`` as the Hub spells repository ids, and nothing that looks like a path."""
    if spec.startswith((".", "/", "~")) or spec.endswith((".model", ".json")) or spec.count("/") > 1:
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError:
        return False
    return True


def _check_tokenizer(tok: str) -> tuple[list[str], list[str]]:
    """(problems, notes) about the tokenizer ``tok``: a file or folder that holds a tokenizer
    (recognized by content, as the build loads it), or a Hub id in the local cache."""
    from .errors import TokenizerError
    from .tokenization.files import kind_of_file, kind_of_folder

    p = Path(tok).expanduser()
    try:
        if p.is_file():
            kind_of_file(p)
            return [], []
        if p.is_dir():
            if kind_of_folder(p)[0] == "auto" and not (p / "tokenizer_config.json").is_file():
                return [f"{tok} holds no tokenizer (tokenizer.json, tekken.json, tokenizer_config.json "
                        "or a SentencePiece .model)"], []
            return [], []
    except TokenizerError as e:
        return [str(e)], []
    if not _hub_id(tok):
        return [f"not found: {tok}"], []
    from huggingface_hub import constants, try_to_load_from_cache

    if any(isinstance(try_to_load_from_cache(tok, f), str) for f in ("tokenizer_config.json", "tokenizer.json")):
        return [], []
    if constants.HF_HUB_OFFLINE:
        return [f"{tok!r} is not a local path nor in the Hugging Face cache, and the Hub is offline "
                "(HF_HUB_OFFLINE)"], []
    return [], [f"tokenizer {tok!r} is not a local path: the build will fetch it from the Hugging Face Hub"]


def check_files(recipe: "Recipe") -> tuple[list[str], list[str]]:
    """(problems, notes) about the files ``recipe`` names, without reading them: every source
    matches at least one readable file, and the tokenizer and templates exist. A tokenizer that is
    a Hub id is looked up in the local cache only; when it is not there the build will download it
    (a note), unless the Hub is offline (a problem)."""
    from .sources.paths import expand

    problems, notes = [], []
    for i, s in enumerate(recipe.sources):
        try:
            expand(s.path)
        except DatakitError as e:
            problems.append(f"sources[{i}].path: {e}")
    found, note = _check_tokenizer(recipe.tokenizer)
    problems += [f"tokenizer: {p}" for p in found]
    notes += note
    from .recipe import BUILTIN_TEMPLATES

    for i, step in enumerate(recipe.transforms):
        if step.name == "template" and step.options.name not in (*BUILTIN_TEMPLATES, "chat") \
                and not Path(step.options.name).is_file():
            problems.append(f"transforms[{i}].template: template file not found: {step.options.name}")
    ct = recipe.chat_template
    if ct and "{" not in ct and ct.endswith((".jinja", ".j2")) and not Path(ct).is_file():
        problems.append(f"chat_template: file not found: {ct}")
    return problems, notes


def validate_recipe(path: str | Path) -> tuple["Recipe", list[str]]:
    """``load_recipe`` plus ``check_files``: the recipe and its notes, or a RecipeError listing
    every problem (schema, files)."""
    from .recipe import load_recipe

    recipe = load_recipe(path)
    problems, notes = check_files(recipe)
    if problems:
        raise RecipeError(str(path), problems)
    return recipe, notes
