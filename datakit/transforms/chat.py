"""``template: chat``: conversations rendered by a Jinja chat template, every assistant turn located exactly.

What a turn supervises: what the template renders after its generation prompt, up to and
including the turn's end-of-turn token, which is exactly what the model must generate at
inference. Role headers, the separator after the end-of-turn token, and an end-of-document token
the template appends after the conversation (Phi-3.5's ``<|endoftext|>``) are not supervised.
This needs no ``{% generation %}`` markers, and never assumes that rendering a conversation's
first messages gives the start of its full render (Qwen3 drops earlier think blocks,
DeepSeek-R1's generation prompt ends in ``<think>\\n``, Mistral v3 puts the system prompt into
the last user message, Phi-3.5 appends EOS when there is no generation prompt).

A conversation is rendered twice, whatever its number of turns: as it is, and up to its last
assistant turn with the generation prompt (the text inference feeds the model). The
scaffolding comes from sentinel renders (chat_locate.py), cached by the conversation's shape
(roles, which texts are empty, where ``<think>`` markers are), so a data set of a few shapes
pays for them a few times. For each assistant turn:
- start: the end of the generation prompt in the scaffolding before its text (the prompt's
  tail: the preceding message's closing markup, then the generation prompt);
- end: the end of the first markup token (an added or control token of the tokenizer) after its
  text, the end-of-turn token; a template with no markup there ends the turn with its text.
Two checks that do not use the sentinel mapping: the turn's text (without its end white
space) is found in the span at the first place at or after the span's start, and when the real
render starts with the inference prompt, the last turn starts exactly where that prompt ends.
A turn that fails either is an error naming the row and the message, never a silent mis-mask.

The inference prompt is also compared with the training text before the last turn: a row where
they differ (``prompt_ok`` false) is counted by ``tokenize`` (see tokenize_sft.py).
"""
from __future__ import annotations

from ..errors import TemplateError
from ..tokenization import Tokenizer
from .chat_locate import SENTINEL, Locator, Scaffold, normalize, parse, sentinels, turn_error
from .chat_sandbox import MIN_OUTPUT, OUTPUT_FACTOR, RenderLimit, RENDER_SECONDS, make_environment, \
    render_limited

_SHAPES = 4096  # sentinel renders kept; a data set has few conversation shapes


def markup_tokens(tokenizer: Tokenizer) -> list[str]:
    """The strings the tokenizer turns into single markup tokens: its added tokens (HF) or control
    pieces (SentencePiece), and BOS/EOS."""
    backend = getattr(tokenizer, "backend", None)
    if backend is not None:
        out = [t.content for t in backend.get_added_tokens_decoder().values()]
    else:
        out = [tokenizer.id_to_piece(i) for i in tokenizer.special_ids()]
    return out + [t for t in (tokenizer.bos_token, tokenizer.eos_token) if t]


class _Shape:
    """What the sentinel renders of one conversation shape tell: the scaffolding of the full
    render, and the inference prompt's tail (closing markup + generation prompt)."""

    def __init__(self, full: str, prompt: str | None, prompt_plain: str | None):
        self.scaffold = Scaffold.of(full)
        self.turns: dict[int, tuple | str] = {}  # assistant message -> its offsets (ChatTemplate._turn_offsets)
        self.tail = self.generation = None
        if prompt is not None:
            last = list(SENTINEL.finditer(prompt))
            after = last[-1].end() if last else 0
            from .chat_locate import common_prefix

            gen_at = common_prefix(prompt, prompt_plain or "")
            self.tail = prompt[after:]
            self.generation = prompt[max(after, gen_at):]


class ChatTemplate:
    """Renders a conversation and locates its assistant turns (see the module docstring)."""

    def __init__(self, source: str, *, tokenizer: Tokenizer, origin: str):
        from jinja2 import TemplateSyntaxError

        self.origin = origin
        try:
            self.template = make_environment().from_string(source)
        except TemplateSyntaxError as e:
            raise TemplateError(f"{origin}:{e.lineno}: chat template syntax error: {e.message}") from None
        self.variables = {**self.template.globals, "bos_token": tokenizer.bos_token or "",
                          "eos_token": tokenizer.eos_token or ""}
        self.locator = Locator(markup_tokens(tokenizer))
        self._shapes: dict[str, _Shape] = {}

    def render(self, messages: list[dict], where: str, *, add_generation_prompt: bool, limit: int = MIN_OUTPUT) -> str:
        try:
            return render_limited(self.template, {"messages": messages, "add_generation_prompt": add_generation_prompt,
                                                  **self.variables}, limit=limit)
        except TemplateError as e:
            raise TemplateError(f"{where}: chat template {self.origin}: {e}") from None
        except RenderLimit:
            raise TemplateError(f"{where}: chat template {self.origin} ran past its limits ({RENDER_SECONDS:g} s, "
                                f"{limit:,} characters) rendering this row") from None
        except Exception as e:  # jinja raises SecurityError, UndefinedError, TypeError...
            raise TemplateError(f"{where}: chat template {self.origin} failed: {type(e).__name__}: {e}") from None

    def _shape(self, sent, last: int, where: str, limit: int) -> _Shape:
        shape = self._shapes.get(sent.key)
        if shape is None:
            full = self.render(sent.messages, where, add_generation_prompt=False, limit=limit)
            prompt = plain = None
            if last > 0:
                prompt = self.render(sent.messages[:last], where, add_generation_prompt=True, limit=limit)
                plain = self.render(sent.messages[:last], where, add_generation_prompt=False, limit=limit)
            if len(self._shapes) >= _SHAPES:
                self._shapes.clear()
            shape = self._shapes[sent.key] = _Shape(full, prompt, plain)
        return shape

    def locate(self, messages: list[dict], where: str, *, normalized: bool = False):
        """``(text, spans, data, prompt_ok)``: the render, one (start, end) per assistant turn,
        the ranges of message text in it, and whether the text before the last turn is the
        inference prompt. ``normalized``: the messages are already as ``normalize`` makes them."""
        msgs = messages if normalized else normalize(messages)
        limit = max(MIN_OUTPUT, OUTPUT_FACTOR * sum(len(m.get("content") or "") for m in msgs))
        text = self.render(msgs, where, add_generation_prompt=False, limit=limit)
        assistants = [i for i, m in enumerate(msgs) if m.get("role") == "assistant"]
        if not assistants:
            return text, [], [], True
        last = assistants[-1]
        prompt = self.render(msgs[:last], where, add_generation_prompt=True, limit=limit) if last else None
        sent = sentinels(msgs)
        shape = self._shape(sent, last, where, limit)
        parsed = parse(text, shape.scaffold, sent.texts)
        if isinstance(parsed, int):
            i = sent.owner[shape.scaffold.ids[parsed]] if parsed >= 0 else 0
            raise turn_error(where, i, "the chat template prints this message with changes beyond white space at "
                                       "its ends, or with scaffolding that depends on its text")
        at, data = parsed
        spans = [self._turn(i, at, shape, sent, where) for i in assistants]
        self._check(text, spans, assistants, msgs, where)
        start = spans[-1][0]
        prompt_ok = prompt is not None and text[:start] == prompt
        if prompt is not None and text.startswith(prompt) and start != len(prompt):
            raise turn_error(where, last, f"the inference prompt ends at character {len(prompt)} but the "
                                          f"sentinel mapping starts the turn at {start}")
        for (s, e), (s2, _) in zip(spans, spans[1:]):
            if s2 < e:
                raise turn_error(where, assistants[spans.index((s2, _))], "it overlaps the turn before it")
        return text, spans, data, prompt_ok

    def _turn(self, i: int, at: list[int], shape: _Shape, sent, where: str) -> tuple[int, int]:
        """The turn of assistant message ``i``: where its scaffolding pieces are in the real render
        (``at``), plus the offsets inside them that depend on the shape alone (cached)."""
        cached = shape.turns.get(i)
        if cached is None:
            cached = shape.turns[i] = self._turn_offsets(i, shape, sent)
        if isinstance(cached, str):
            raise turn_error(where, i, cached)
        first, header, after, eot = cached
        return at[first] + header, at[after] + eot

    def _turn_offsets(self, i: int, shape: _Shape, sent) -> tuple[int, int, int, int] | str:
        ids, pieces = shape.scaffold.ids, shape.scaffold.pieces
        mine = [j for j, n in enumerate(ids) if sent.owner[n] == i]
        if not mine:
            return "the chat template prints none of this assistant message's text"
        if shape.tail is None:
            return "the conversation starts with an assistant turn (there is no prompt for it)"
        first, last = mine[0], mine[-1]
        header = self.locator.header_end(pieces[first], shape.tail, shape.generation)
        if header is None:
            return f"the text before it ({pieces[first]!r}) does not hold the generation prompt {shape.tail!r}"
        return first, header, last + 1, self.locator.end_of_turn(pieces[last + 1])

    def _check(self, text: str, spans, assistants, msgs, where: str) -> None:
        """The second lookup: each turn's own text, found by plain search from the span's start,
        lies inside the span."""
        for (start, end), i in zip(spans, assistants):
            content = msgs[i].get("content")
            if not isinstance(content, str):
                continue
            core = (content.split("</think>")[-1] if "</think>" in content else content).strip()
            found = text.find(core, start) if core else start
            if not 0 <= found <= found + len(core) <= end:
                raise turn_error(where, i, "its text, searched from the span's start, is not inside the span")
