"""Canonical columns from records parsed by pyarrow's JSON reader, format by format, column-wise.

A format's plan is the explicit pyarrow schema its records are read with (under the file's key
names, after ``columns:``) and a converter to the canonical columns of ``formats.SCHEMAS``. The
converter returns None when any record is not plainly well-formed (a null or missing field, an
unknown role, an empty or assistant-less conversation, a history that is not string pairs): that
chunk then goes through ``formats.to_batch``, whose error names the row and the field.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .formats import MESSAGE_ROLES, MESSAGE_TYPE, REASONING_KEYS, SHAREGPT_ROLES

Columns = dict[str, pa.Array]
_STR = pa.string()


@dataclass(frozen=True)
class Plan:
    schema: pa.Schema  # what pyarrow reads, under the file's key names
    convert: Callable[[list[pa.Array]], Columns | None]  # the schema's columns -> canonical, or None


def plan(fmt: str, columns: dict[str, str]) -> Plan | None:
    """How to read format ``fmt`` with pyarrow, or None (renames that collide, an unknown format)."""
    key = lambda name: columns.get(name, name)  # noqa: E731
    if fmt in ("text", "prompt_completion"):
        names = ("text",) if fmt == "text" else ("prompt", "completion")
        return _flat([key(n) for n in names], lambda cols: _required(names, cols))
    if fmt == "alpaca":
        keys = [key(n) for n in ("instruction", "input", "output", "system")]
        return _flat(keys, _alpaca, extra=[(key("history"), pa.list_(pa.list_(_STR)))])
    if fmt in ("messages", "sharegpt"):
        names, roles = (("messages", "role", "content"), dict(zip(MESSAGE_ROLES, MESSAGE_ROLES))) \
            if fmt == "messages" else (("conversations", "from", "value"), SHAREGPT_ROLES)
        turn = [key(names[1]), key(names[2]), *REASONING_KEYS]
        if len(set(turn)) != len(turn):
            return None
        schema = pa.schema([(key(names[0]), pa.list_(pa.struct([(k, _STR) for k in turn])))])
        return Plan(schema, lambda cols: _conversations(cols[0], roles))
    return None


def _flat(keys: list[str], convert, *, extra: list = ()) -> Plan | None:
    fields = [(k, _STR) for k in keys] + list(extra)
    if len({name for name, _ in fields}) != len(fields):
        return None
    return Plan(pa.schema(fields), convert)


def _required(names: tuple[str, ...], cols: list[pa.Array]) -> Columns | None:
    return None if any(c.null_count for c in cols) else dict(zip(names, cols))


def _alpaca(cols: list[pa.Array]) -> Columns | None:
    """instruction and output are required; a missing input reads "", a missing system None, and a
    missing (or null, or empty) history no pairs."""
    instruction, input_, output, system, history = cols
    if instruction.null_count or output.null_count:
        return None
    pairs = _pairs(history)
    if pairs is None:
        return None
    return {"instruction": instruction, "input": pc.fill_null(input_, ""), "output": output,
            "system": system, "history": pairs}


def _pairs(history: pa.ListArray) -> pa.ListArray | None:
    """Each row's [prompt, response] pairs (no nulls, exactly two strings each), nulls as []."""
    inner = history.flatten()  # the pairs of the rows that have a list
    if inner.null_count or inner.flatten().null_count:
        return None
    if len(inner) and not pc.all(pc.equal(pc.list_value_length(inner), 2)).as_py():
        return None
    lengths = pc.fill_null(pc.list_value_length(history), 0).to_numpy()
    return pa.ListArray.from_arrays(_offsets(lengths), inner, type=pa.list_(pa.list_(_STR)))


def _offsets(lengths: np.ndarray) -> pa.Array:
    return pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int32())


_MESSAGE_FIELDS = [MESSAGE_TYPE.value_type.field(i) for i in range(MESSAGE_TYPE.value_type.num_fields)]


def _conversations(turns: pa.ListArray, roles: dict[str, str]) -> Columns | None:
    """Non-empty lists of turns, each with a known role and a content, and an assistant turn in
    every conversation; the reasoning is the first of REASONING_KEYS that is not null."""
    if turns.null_count:
        return None
    lengths = pc.list_value_length(turns).to_numpy()
    if not lengths.all():
        return None
    values = turns.flatten()
    if values.null_count:
        return None
    role, content, *reasoning = values.flatten()
    if role.null_count or content.null_count:
        return None
    index = pc.index_in(role, value_set=pa.array(list(roles), _STR))
    if index.null_count:
        return None
    role = pa.array(list(roles.values()), _STR).take(index)
    offsets = _offsets(lengths)
    assistant = pc.equal(role, "assistant").to_numpy(zero_copy_only=False)
    if not np.add.reduceat(assistant, offsets.to_numpy()[:-1]).all():
        return None
    turn = pa.StructArray.from_arrays([role, content, pc.coalesce(*reasoning)], fields=_MESSAGE_FIELDS)
    return {"messages": pa.ListArray.from_arrays(offsets, turn, type=MESSAGE_TYPE)}
