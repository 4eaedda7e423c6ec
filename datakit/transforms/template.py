"""``template``: instruction rows -> rendered ``text`` plus the character spans to supervise.

Two kinds of template:
- alpaca-lora JSON templates (``prompt_input``, ``prompt_no_input``, ``response_split``): built in as
  alpaca, alpaca_short and alpaca_legacy, or any file of that shape. The supervised span is the
  response; the prompt is everything before it.
- ``chat``: a Jinja chat template (the tokenizer's, or the recipe's ``chat_template``), rendered in
  a sandbox. Each assistant turn is located by rendering the conversation up to it: the span runs
  from the turn's content to the end of its end-of-turn marker (e.g. ``<|im_end|>``). This needs
  no ``{% generation %}`` markers, and a template that does not render incrementally is an error.
"""
from __future__ import annotations

import itertools
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..errors import TemplateError
from ..recipe import BUILTIN_TEMPLATES, TemplateOptions
from ..tokenization import Tokenizer
from ..columns import list_array
from .base import BaseStep

OUTPUT_SCHEMA = pa.schema([("text", pa.string()), ("span_starts", pa.list_(pa.int32())),
                           ("span_ends", pa.list_(pa.int32())), ("_where", pa.string()),
                           ("_source", pa.int32()), ("_group", pa.int64())])


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


def _batch(texts: list[str], spans: list[list[tuple[int, int]]], source: pa.RecordBatch) -> pa.RecordBatch:
    counts = np.fromiter(map(len, spans), dtype=np.int64, count=len(spans))
    total = int(counts.sum())
    flat = np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(spans)), dtype=np.int64,
                       count=2 * total).reshape(-1, 2)
    if total and flat.max() >= 2**31:
        row = int(np.repeat(np.arange(len(spans)), counts)[int(np.argmax(flat.max(axis=1)))])
        raise TemplateError(f"{source.column('_where')[row]}: the rendered row has 2**31 characters or more")
    return pa.RecordBatch.from_arrays([
        pa.array(texts, pa.string()),
        list_array(flat[:, 0].astype(np.int32), counts, pa.int32()),
        list_array(flat[:, 1].astype(np.int32), counts, pa.int32()),
        source.column("_where"), source.column("_source"), source.column("_group"),
    ], schema=OUTPUT_SCHEMA)


class RenderStep(BaseStep):
    """A template step: ``render(row) -> (text, supervised spans)`` for every row of a batch."""

    def render(self, row: dict) -> tuple[str, list[tuple[int, int]]]:
        raise NotImplementedError

    def render_batch(self, batch: pa.RecordBatch) -> tuple[list[str], list[list[tuple[int, int]]]]:
        out = [self.render(r) for r in batch.to_pylist()]
        return [t for t, _ in out], [s for _, s in out]

    def __call__(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        texts, spans = self.render_batch(batch)
        self.stats["rows_read"] += len(texts)
        return [_batch(texts, spans, batch)]


class AlpacaTemplate(RenderStep):
    """Renders alpaca rows (and prompt/completion rows, the prompt as the instruction).

    A ``system`` text opens the prompt, followed by a blank line; ``history`` pairs are rendered as
    earlier exchanges with the same template, each response a span of its own.
    """

    def __init__(self, template: dict):
        super().__init__()
        self.template = template

    def render_batch(self, batch: pa.RecordBatch) -> tuple[list[str], list[list[tuple[int, int]]]]:
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
        texts, spans = [], []
        general = None
        for i, (instruction, input_text, output, simple) in enumerate(zip(instructions, inputs, outputs, plain)):
            if not simple:
                general = general or batch.to_pylist()
                text, row_spans = self.render(general[i])
                texts.append(text)
                spans.append(row_spans)
                continue
            prompt = self.prompt(instruction, input_text)
            texts.append(prompt + output)
            spans.append(((len(prompt), len(prompt) + len(output)),))
        return texts, spans

    def prompt(self, instruction: str, input_text: str = "") -> str:
        t = self.template
        if input_text:
            return t["prompt_input"].format(instruction=instruction, input=input_text)
        return t["prompt_no_input"].format(instruction=instruction)

    def render(self, row: dict) -> tuple[str, list[tuple[int, int]]]:
        if "messages" in row:
            raise TemplateError(f"{row['_where']}: alpaca templates render alpaca or prompt_completion "
                                f"rows; use `template: chat` for conversations")
        if "prompt" in row:
            exchanges = [(self.prompt(row["prompt"]), row["completion"])]
        else:
            exchanges = [(self.prompt(q), a) for q, a in row.get("history") or []]
            exchanges.append((self.prompt(row["instruction"], row["input"]), row["output"]))
        text = f"{row['system']}\n\n" if row.get("system") else ""
        spans = []
        for k, (prompt, response) in enumerate(exchanges):
            text += prompt
            spans.append((len(text), len(text) + len(response)))
            text += response
            if k < len(exchanges) - 1:
                text += "\n\n"
        return text, spans

def _sandbox():
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(Extension):
        """Accepts ``{% generation %}...{% endgeneration %}`` and renders its body as it is."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    def raise_exception(message):
        raise TemplateError(f"chat template: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag])
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: "1970-01-01"  # a build is reproducible: no clock
    return env


class ChatTemplate(RenderStep):
    """Renders conversations (alpaca and prompt/completion rows become user/assistant turns)."""

    def __init__(self, source: str, *, tokenizer: Tokenizer, origin: str):
        super().__init__()
        from jinja2 import TemplateSyntaxError

        self.origin = origin
        try:
            self.template = _sandbox().from_string(source)
        except TemplateSyntaxError as e:
            raise TemplateError(f"{origin}:{e.lineno}: chat template syntax error: {e.message}") from None
        self.variables = {"bos_token": tokenizer.bos_token or "", "eos_token": tokenizer.eos_token or ""}

    def _render(self, messages: list[dict], where: str, *, add_generation_prompt: bool) -> str:
        try:
            return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                        **self.variables)
        except TemplateError as e:
            raise TemplateError(f"{where}: {e}") from None
        except Exception as e:  # jinja raises SecurityError, UndefinedError, TypeError...
            raise TemplateError(f"{where}: chat template {self.origin} failed: {type(e).__name__}: {e}") from None

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

    def render(self, row: dict) -> tuple[str, list[tuple[int, int]]]:
        where = row["_where"]
        msgs = self.messages(row)
        full = self._render(msgs, where, add_generation_prompt=False)
        spans = []
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            before = self._render(msgs[:i], where, add_generation_prompt=True)
            upto = self._render(msgs[:i + 1], where, add_generation_prompt=False)
            if not (full.startswith(upto) and upto.startswith(before)):
                raise TemplateError(f"{where}: the chat template does not render turn {i} as a prefix of the "
                                    f"conversation, so its assistant span cannot be located exactly")
            segment = upto[len(before):]
            content = m["content"]
            at = segment.find(content) if content else 0
            if at < 0 and content.strip():
                content = content.strip()
                at = segment.find(content)
            if at < 0:
                raise TemplateError(f"{where}: field 'messages[{i}].content': the chat template changes the "
                                    f"assistant text, so it cannot be located in the rendered turn")
            start = len(before) + at
            end = len(before) + len(segment.rstrip())
            spans.append((start, max(end, start + len(content))))
        return full, spans

def make_template(options: TemplateOptions, *, tokenizer: Tokenizer, chat_template: str | None) -> BaseStep:
    if options.name != "chat":
        return AlpacaTemplate(load_alpaca_template(options.name))
    source, origin = chat_template, "recipe chat_template"
    if source and "{" not in source:
        p = Path(source)
        if not p.is_file():
            raise TemplateError(f"chat_template file not found: {source}")
        source, origin = p.read_text("utf-8"), str(p)
    if not source:
        source, origin = tokenizer.chat_template, f"{tokenizer.source} chat template"
    if not source:
        raise TemplateError(f"tokenizer {tokenizer.source} has no chat template; set `chat_template:` in "
                            f"the recipe (inline Jinja or a .jinja file)")
    return ChatTemplate(source, tokenizer=tokenizer, origin=origin)
