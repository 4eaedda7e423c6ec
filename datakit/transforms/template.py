"""``template``: instruction rows -> rendered ``text`` plus the character spans to supervise.

Two kinds of template:
- alpaca-lora JSON templates (``prompt_input``, ``prompt_no_input``, ``response_split``): built in as
  alpaca, alpaca_short and alpaca_legacy, or any file of that shape. The supervised span is the
  response; the prompt is everything before it.
- ``chat``: a Jinja chat template (the tokenizer's, or the recipe's ``chat_template``), rendered in
  a sandbox with limits (chat_sandbox.py); each assistant turn is located in the render as
  chat.py describes, with no ``{% generation %}`` markers needed.

Both also give the ranges of text that came from the data (render.py), which ``tokenize`` encodes
as plain text even where it spells a special token.
"""
from __future__ import annotations

import json
import string
from importlib import resources
from pathlib import Path

import pyarrow as pa

from ..errors import TemplateError
from ..recipe import BUILTIN_TEMPLATES, TemplateOptions
from ..tokenization import Tokenizer
from .base import BaseStep
from .render import RenderStep, Rendered

def load_alpaca_template(name: str) -> dict:
    """A built-in name or a path to an alpaca-lora style JSON template, checked for its keys."""
    if name in BUILTIN_TEMPLATES:
        text = resources.files("datakit").joinpath(f"templates/{name}.json").read_text("utf-8")
        where = f"built-in template {name}"
    else:
        p = Path(name)
        if not p.is_file():
            raise TemplateError(f"template not found: {name} (built in: {', '.join(BUILTIN_TEMPLATES)}, chat)")
        text, where = p.read_text("utf-8"), str(p)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TemplateError(f"{where}:{e.lineno}: invalid JSON ({e.msg})") from None
    for key, needs in (("prompt_input", ("{instruction}", "{input}")), ("prompt_no_input", ("{instruction}",))):
        value = data.get(key) if isinstance(data, dict) else None
        if not isinstance(value, str):
            raise TemplateError(f"{where}: field '{key}' is missing or not a string")
        for placeholder in needs:
            if placeholder not in value:
                raise TemplateError(f"{where}: field '{key}' lacks the placeholder {placeholder}")
    return data


class _Format:
    """A ``str.format`` template that also tells where each field's value lands."""

    def __init__(self, source: str):
        self.source = source
        self.parts = [(literal, field) for literal, field, _, _ in string.Formatter().parse(source)]

    def __call__(self, values: dict, data: list[tuple[int, int]], offset: int = 0) -> str:
        """The text; appends the (start, end) of every field value, shifted by ``offset``, to ``data``."""
        out, n = [], offset
        for literal, field in self.parts:
            out.append(literal)
            n += len(literal)
            if field is not None:
                value = values[field]
                if value:
                    data.append((n, n + len(value)))
                out.append(value)
                n += len(value)
        return "".join(out)


class AlpacaTemplate(RenderStep):
    """Renders alpaca rows (and prompt/completion rows, the prompt as the instruction).

    A ``system`` text opens the prompt, followed by a blank line; ``history`` pairs are rendered as
    earlier exchanges with the same template, each response a span of its own.
    """

    def __init__(self, template: dict):
        super().__init__()
        self.template = template
        self.with_input = _Format(template["prompt_input"])
        self.without_input = _Format(template["prompt_no_input"])

    def render_batch(self, batch: pa.RecordBatch) -> list[Rendered]:
        """Column by column; rows with a system text or a history go through ``render``."""
        names = batch.schema.names
        if "prompt" in names:
            instructions, outputs = batch.column("prompt").to_pylist(), batch.column("completion").to_pylist()
            inputs = [""] * len(instructions)
            plain = [True] * len(instructions)
        elif "instruction" in names:
            instructions, outputs = batch.column("instruction").to_pylist(), batch.column("output").to_pylist()
            inputs = batch.column("input").to_pylist()
            systems = batch.column("system").to_pylist() if "system" in names else [None] * len(outputs)
            histories = batch.column("history").to_pylist() if "history" in names else [None] * len(outputs)
            plain = [not (s or h) for s, h in zip(systems, histories)]
        else:
            return super().render_batch(batch)
        out = []
        general = None
        for i, (instruction, input_text, output, simple) in enumerate(zip(instructions, inputs, outputs, plain)):
            if not simple:
                general = general or batch.to_pylist()
                out.append(self.render(general[i]))
                continue
            data: list[tuple[int, int]] = []
            prompt = self.prompt(instruction, input_text, data=data)
            span = (len(prompt), len(prompt) + len(output))
            if output:
                data.append(span)
            out.append(Rendered(prompt + output, [span], data))
        return out

    def prompt(self, instruction: str, input_text: str = "", *, data: list | None = None, offset: int = 0) -> str:
        data = [] if data is None else data
        if input_text:
            return self.with_input({"instruction": instruction, "input": input_text}, data, offset)
        return self.without_input({"instruction": instruction}, data, offset)

    def render(self, row: dict) -> Rendered:
        if "messages" in row:
            raise TemplateError(f"{row['_where']}: alpaca templates render alpaca or prompt_completion "
                                f"rows; use `template: chat` for conversations")
        if "prompt" in row:
            exchanges = [((row["prompt"], ""), row["completion"])]
        else:
            exchanges = [((q, ""), a) for q, a in row.get("history") or []]
            exchanges.append(((row["instruction"], row["input"]), row["output"]))
        system = row.get("system")
        text = f"{system}\n\n" if system else ""
        data = [(0, len(system))] if system else []
        spans = []
        for k, ((instruction, input_text), response) in enumerate(exchanges):
            text += self.prompt(instruction, input_text, data=data, offset=len(text))
            spans.append((len(text), len(text) + len(response)))
            if response:
                data.append(spans[-1])
            text += response
            if k < len(exchanges) - 1:
                text += "\n\n"
        return Rendered(text, spans, data)


class ChatStep(RenderStep):
    """``template: chat``: conversations (alpaca and prompt/completion rows become user/assistant
    turns) through a Jinja chat template; see chat.py."""

    def __init__(self, source: str, *, tokenizer: Tokenizer, origin: str):
        super().__init__()
        from .chat import ChatTemplate

        self.chat = ChatTemplate(source, tokenizer=tokenizer, origin=origin)

    @staticmethod
    def messages(row: dict) -> list[dict]:
        if "messages" in row:
            return row["messages"]
        if "prompt" in row:
            return [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]
        msgs = [{"role": "system", "content": row["system"]}] if row.get("system") else []
        for q, a in row.get("history") or []:
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        user = row["instruction"] + (f"\n{row['input']}" if row["input"] else "")
        return msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]

    def render(self, row: dict) -> Rendered:
        return Rendered(*self.chat.locate(self.messages(row), row["_where"]))

    def render_batch(self, batch: pa.RecordBatch) -> list[Rendered]:
        conversations = plain_messages(batch)
        if conversations is None:
            return super().render_batch(batch)
        locate = self.chat.locate
        return [Rendered(*locate(msgs, where, normalized=True))
                for msgs, where in zip(conversations, batch.column("_where").to_pylist())]


def plain_messages(batch: pa.RecordBatch) -> list[list[dict]] | None:
    """Each row's messages as transformers hands them to a template (``{role, content}`` dicts),
    built from the Arrow columns, when no message has reasoning; None otherwise (the row-by-row
    path then drops the None keys, chat_locate.normalize). Half the cost of ``to_pylist`` and
    normalizing: one dict per message instead of two."""
    if "messages" not in batch.schema.names:
        return None
    col = batch.column("messages")
    bounds = col.offsets.to_numpy()  # into ``col.values``, which a sliced column keeps whole
    values = col.values.slice(bounds[0], bounds[-1] - bounds[0]) if len(bounds) else col.values
    names = {f.name for f in values.type} if pa.types.is_struct(values.type) else set()
    if not names <= {"role", "content", "reasoning_content"} or not {"role", "content"} <= names:
        return None
    content = values.field("content")
    if "reasoning_content" in names and values.field("reasoning_content").null_count != len(values):
        return None
    if col.null_count or values.null_count or content.null_count or values.field("role").null_count:
        return None
    msgs = [{"role": r, "content": c} for r, c in zip(values.field("role").to_pylist(), content.to_pylist())]
    bounds = (bounds - bounds[0]).tolist()
    return [msgs[a:b] for a, b in zip(bounds, bounds[1:])]


def make_template(options: TemplateOptions, *, tokenizer: Tokenizer, chat_template: str | None) -> BaseStep:
    if options.name != "chat":
        return AlpacaTemplate(load_alpaca_template(options.name))
    source, origin = chat_template, "recipe chat_template"
    if source and "{" not in source:
        p = Path(source)
        if not p.is_file():
            raise TemplateError(f"chat_template file not found: {source}")
        source, origin = p.read_text("utf-8"), str(p)
        if not source.strip():
            raise TemplateError(f"{p}: the chat template file is empty")
    if not source:
        source, origin = tokenizer.chat_template, f"{tokenizer.source} chat template"
    if not source:
        raise TemplateError(f"tokenizer {tokenizer.source} has no chat template; set `chat_template:` in "
                            f"the recipe (inline Jinja or a .jinja file)")
    return ChatStep(source, tokenizer=tokenizer, origin=origin)
