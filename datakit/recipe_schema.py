"""The recipe's JSON schema (``datakit/schemas/recipe.schema.json``) and its problems as one line
each: ``path: message``, in document order, worded for people rather than as jsonschema's."""
from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from typing import Any


@lru_cache(maxsize=1)
def schema() -> dict:
    text = resources.files("datakit").joinpath("schemas/recipe.schema.json").read_text("utf-8")
    return json.loads(text)


def _where(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(recipe)"


# The messages of the JSON-schema keywords that say only "the value is out of bounds".
_BOUNDS = {
    "minimum": "must be >= {val}",
    "exclusiveMinimum": "must be > {val}",
    "maximum": "must be <= {val}",
    "minItems": "must have at least {val} item(s)",
    "minLength": "must not be empty",
    "uniqueItems": "lists an item twice ({instance})",
}


def _describe(error) -> str:
    v, val = error.validator, error.validator_value
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return f"unknown key {', '.join(map(repr, extra))} (allowed: {', '.join(allowed)})"
    if v == "required":
        return error.message.replace(" is a required property", "").join(("missing required key ", ""))
    if "propertyNames" in error.schema_path:
        return f"unknown step {error.instance!r} (known: {', '.join(val)})"
    if v in ("minProperties", "maxProperties"):
        return "a step is one key with its options, e.g. `- pack: {block_size: 1024}`"
    if v in _BOUNDS:
        return _BOUNDS[v].format(val=val, instance=error.instance)
    if v == "enum":
        return f"must be one of {', '.join(map(str, val))} (got {error.instance!r})"
    if v == "type":
        kinds = [val] if isinstance(val, str) else val
        return f"must be {' or '.join(k for k in kinds)} (got {type(error.instance).__name__})"
    if v in ("oneOf", "anyOf"):
        kinds = [b.get("type") or schema()["definitions"][b["$ref"].rsplit("/", 1)[-1]].get("type", "?")
                 for b in val]
        return f"must be {' or '.join(kinds)} (got {type(error.instance).__name__})"
    if v == "pattern" and "description" in error.schema:
        return f"must be {error.schema['description']} (got {error.instance!r})"
    return error.message


def _leaves(error) -> list:
    """A `oneOf` that failed (``output: build/x`` or ``output: {path: ...}``) stands for the problems
    of the branches whose type fits the value, so that the message names the key that is wrong."""
    if error.validator not in ("oneOf", "anyOf") or not error.context:
        return [error]
    branches: dict[int, list] = {}
    for e in error.context:
        branches.setdefault(e.relative_schema_path[0], []).append(e)
    fitting = [e for errs in branches.values()
               if not any(e.validator == "type" and not e.relative_path for e in errs) for e in errs]
    if not fitting:
        return [error]
    return [leaf for e in fitting for leaf in _leaves(e)]


def validate_dict(data: Any) -> list[str]:
    """Every schema problem in ``data``, as 'path: message' lines, in document order."""
    import jsonschema

    validator = jsonschema.Draft7Validator(schema())
    problems = []
    errors = [leaf for err in validator.iter_errors(data) for leaf in _leaves(err)]
    for err in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
        path = list(err.absolute_path)
        if "propertyNames" in err.schema_path:
            path = path + [err.instance]
        problems.append(f"{_where(path)}: {_describe(err)}")
    problems += [f"{_where(path)}: must be a finite number, not {value}" for path, value in _non_finite(data)]
    return problems


def _non_finite(value, path: tuple = ()):
    """YAML's ``.nan`` and ``.inf``: every bound of the schema compares false with NaN, so they are
    refused here, wherever they are."""
    if isinstance(value, float) and not math.isfinite(value):
        yield list(path), value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _non_finite(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _non_finite(v, (*path, i))
