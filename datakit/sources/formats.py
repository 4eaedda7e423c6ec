"""Format adapters: raw records -> canonical columns, with one clear error per malformed record.

Canonical columns (plus ``_where``, the record's ``file:line`` or ``file: row N``):
- text:              ``text``
- alpaca:            ``instruction``, ``input``, ``output``, ``system``, ``history`` (list of [prompt, response])
- prompt_completion: ``prompt``, ``completion``
- messages/sharegpt: ``messages`` (list of {role, content}); sharegpt's human/gpt become user/assistant
"""
from __future__ import annotations

from typing import Callable

import pyarrow as pa

from ..errors import SourceError

# reasoning_content: a reasoning model's thinking for an assistant turn (also read from `reasoning`
# or `thinking`, transformers' other names for it); the chat template decides what it renders.
MESSAGE_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string()),
                                   ("reasoning_content", pa.string())]))
REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")
SCHEMAS = {
    "text": pa.schema([("text", pa.string()), ("_where", pa.string())]),
    "alpaca": pa.schema([("instruction", pa.string()), ("input", pa.string()), ("output", pa.string()),
                         ("system", pa.string()), ("history", pa.list_(pa.list_(pa.string()))),
                         ("_where", pa.string())]),
    "prompt_completion": pa.schema([("prompt", pa.string()), ("completion", pa.string()),
                                    ("_where", pa.string())]),
    "messages": pa.schema([("messages", MESSAGE_TYPE), ("_where", pa.string())]),
}
SCHEMAS["sharegpt"] = SCHEMAS["messages"]
FIELDS = {
    "text": ("text",),
    "alpaca": ("instruction", "input", "output", "system", "history"),
    "prompt_completion": ("prompt", "completion"),
    "messages": ("messages",),
    "sharegpt": ("conversations",),
}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "model": "assistant",
                  "system": "system"}
MESSAGE_ROLES = {"system", "user", "assistant"}


class _Row:
    """Field access for one record that turns every problem into a SourceError naming row and field."""

    def __init__(self, record, where: str, columns: dict[str, str]):
        if not isinstance(record, dict):
            raise _error(where, None, f"a record must be a JSON object, got {type(record).__name__}")
        self.record, self.where, self.columns = record, where, columns

    def key(self, name: str) -> str:
        return self.columns.get(name, name)

    def string(self, name: str, *, required: bool = True, default: str | None = None) -> str | None:
        key = self.key(name)
        value = self.record.get(key)
        if value is None:
            if required:
                raise _error(self.where, key, "missing (set `columns:` if the file names it differently)")
            return default
        if not isinstance(value, str):
            raise _error(self.where, key, f"must be a string, got {type(value).__name__}")
        return value


def _error(where: str, field: str | None, message: str) -> SourceError:
    file, _, pos = where.rpartition(":")
    pos = pos.strip()
    if pos.isdigit():
        return SourceError(message, file=file, line=int(pos), field=field)
    return SourceError(message, file=where, field=field)


def _text(row: _Row) -> dict:
    return {"text": row.string("text")}


def _alpaca(row: _Row) -> dict:
    history_key = row.key("history")
    history = row.record.get(history_key) or []
    if not isinstance(history, list) or not all(
            isinstance(h, (list, tuple)) and len(h) == 2 and all(isinstance(x, str) for x in h) for h in history):
        raise _error(row.where, history_key, "must be a list of [prompt, response] string pairs")
    return {"instruction": row.string("instruction"), "input": row.string("input", required=False, default=""),
            "output": row.string("output"), "system": row.string("system", required=False),
            "history": [list(h) for h in history]}


def _prompt_completion(row: _Row) -> dict:
    return {"prompt": row.string("prompt"), "completion": row.string("completion")}


def _content(value, where: str, field: str) -> str:
    """Message content: a string, or a list of typed parts ({type: text, text|value: ...})."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for k, part in enumerate(value):
            if isinstance(part, str):
                texts.append(part)
                continue
            if not isinstance(part, dict) or part.get("type", "text") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise _error(where, f"{field}[{k}]", f"only text parts are supported, got {kind!r}")
            text = part.get("text", part.get("value"))
            if not isinstance(text, str):
                raise _error(where, f"{field}[{k}].text", "a text part needs a string `text`")
            texts.append(text)
        return "".join(texts)
    raise _error(where, field, f"must be a string or a list of text parts, got {type(value).__name__}")


_MISSING = object()


def _conversation(row: _Row, list_key: str, role_key: str, content_key: str, roles: dict | set) -> dict:
    key = row.key(list_key)
    turns = row.record.get(key)
    if turns is None:
        raise _error(row.where, key, "missing (set `columns:` if the file names it differently)")
    if not isinstance(turns, list) or not turns:
        raise _error(row.where, key, "must be a non-empty list of turns")
    rk, ck = row.key(role_key), row.key(content_key)
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise _error(row.where, f"{key}[{i}]", "a turn must be an object")
        role = turn.get(rk)
        if not isinstance(role, str) or role not in roles:  # a list or object role is no key of SHAREGPT_ROLES
            raise _error(row.where, f"{key}[{i}].{rk}",
                         f"unknown role {role!r} (expected one of {', '.join(sorted(roles))})")
        content = turn.get(ck, _MISSING)
        if content is _MISSING:
            raise _error(row.where, f"{key}[{i}].{ck}", "missing")
        role = roles[role] if isinstance(roles, dict) else role
        reasoning = None
        if len(turn) > 2:  # a turn of a role and a text (nearly all) has no reasoning to look for
            reasoning = next((turn[k] for k in REASONING_KEYS if turn.get(k) is not None), None)
            if reasoning is not None and not isinstance(reasoning, str):
                raise _error(row.where, f"{key}[{i}].reasoning_content",
                             f"must be a string, got {type(reasoning).__name__}")
        if type(content) is not str:
            content = _content(content, row.where, f"{key}[{i}].{ck}")
        out.append({"role": role, "content": content, "reasoning_content": reasoning})
    if not any(t["role"] == "assistant" for t in out):
        raise _error(row.where, key, "has no assistant turn to train on")
    return {"messages": out}


def _messages(row: _Row) -> dict:
    return _conversation(row, "messages", "role", "content", MESSAGE_ROLES)


def _sharegpt(row: _Row) -> dict:
    return _conversation(row, "conversations", "from", "value", SHAREGPT_ROLES)


ADAPTERS: dict[str, Callable[[_Row], dict]] = {
    "text": _text, "alpaca": _alpaca, "prompt_completion": _prompt_completion,
    "messages": _messages, "sharegpt": _sharegpt,
}


def _string_column(rows: list, key: str, *, required: bool, default: str | None = None) -> list | None:
    """``row[key]`` for every row when all are strings (a missing optional one -> ``default``);
    None when some row is not like that, which the row-by-row path then reports."""
    try:
        values = [r[key] for r in rows] if required else [r.get(key) for r in rows]
    except (KeyError, TypeError, AttributeError):
        return None
    kinds = set(map(type, values))
    if kinds <= {str}:
        return values
    if not required and kinds <= {str, type(None)}:
        return [default if v is None else v for v in values]
    return None


def _fast_columns(fmt: str, rows: list, columns: dict[str, str]) -> dict[str, list] | None:
    """Column by column, for the flat formats: the common case of well-formed records without
    building a dict per row. None sends the batch to the row-by-row path (which names the bad row)."""
    key = lambda name: columns.get(name, name)  # noqa: E731
    if fmt == "text":
        text = _string_column(rows, key("text"), required=True)
        return None if text is None else {"text": text}
    if fmt == "prompt_completion":
        out = {f: _string_column(rows, key(f), required=True) for f in ("prompt", "completion")}
        return None if any(v is None for v in out.values()) else out
    if fmt == "alpaca":
        out = {"instruction": _string_column(rows, key("instruction"), required=True),
               "input": _string_column(rows, key("input"), required=False, default=""),
               "output": _string_column(rows, key("output"), required=True),
               "system": _string_column(rows, key("system"), required=False)}
        if any(v is None for v in out.values()):
            return None
        history = [r.get(key("history")) for r in rows]
        if any(history):
            return None  # histories take the row-by-row path, which checks their pairs
        out["history"] = [[] for _ in rows]
        return out
    return None


def to_batch(fmt: str, rows: list, wheres: list[str], columns: dict[str, str]) -> pa.RecordBatch:
    """Validate ``rows`` of format ``fmt`` and return them as a canonical RecordBatch."""
    try:
        return _to_batch(fmt, rows, wheres, columns)
    except UnicodeEncodeError:  # a JSON escape of half a UTF-16 pair ("\\ud800") is no character
        for record, where in zip(rows, wheres):
            try:
                _to_batch(fmt, [record], [where], columns)
                continue
            except UnicodeEncodeError:
                field = _surrogate_at(record)
                raise _error(where, field, "holds a lone UTF-16 surrogate (a JSON escape such as \"\\ud800\" "
                                           "without its pair), which is not a character and has no UTF-8 form") from None
        raise


def _surrogate_at(value, path: str = "") -> str | None:
    """Where in a JSON value a string holds a lone surrogate (``messages[0].content``), or None."""
    if isinstance(value, str):
        return path or "value" if any("\ud800" <= ch <= "\udfff" for ch in value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _surrogate_at(item, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def _to_batch(fmt: str, rows: list, wheres: list[str], columns: dict[str, str]) -> pa.RecordBatch:
    fast = _fast_columns(fmt, rows, columns)
    if fast is not None:
        fast["_where"] = wheres
        return pa.RecordBatch.from_pydict(fast, schema=SCHEMAS[fmt])
    adapter = ADAPTERS[fmt]
    out = []
    for record, where in zip(rows, wheres):
        item = adapter(_Row(record, where, columns))
        item["_where"] = where
        out.append(item)
    return pa.RecordBatch.from_pylist(out, schema=SCHEMAS[fmt])
