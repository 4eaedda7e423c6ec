"""Where each message lands in a chat template's render, found through a sentinel render.

The conversation is rendered a second time with the text of every message replaced by a
sentinel (``\\U000F0000<n>\\U000F0001``, private-use characters no data holds). That render shows
the template's scaffolding: the text between the messages (role headers, end-of-turn tokens,
separators, default system prompts...). The real render must then read
``scaffold[0] X[0] scaffold[1] X[1] ... scaffold[m]``, where each ``X`` is a message text as the
template printed it: the text itself, or the text with white space cut from its ends (``trim``,
``strip('\\n')``). A render that reads otherwise (a template that rewrites the text, or whose
scaffolding depends on what the text says) cannot be mapped and is reported, never guessed.

Reasoning: ``<think>`` and ``</think>`` stay in the sentinel text, so a template that splits a
message at them (Qwen3, DeepSeek-R1) renders the same scaffolding for both; each run of text
between them gets its own sentinel, and a run the template drops has no place in the render.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import TemplateError

OPEN, CLOSE = "\U000F0000", "\U000F0001"
SENTINEL = re.compile(f"{OPEN}(\\d+){CLOSE}")
THINK = re.compile(r"(<think>|</think>)")
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")  # transformers' aliases


def normalize(messages: list[dict]) -> list[dict]:
    """What transformers hands a template: keys whose value is None dropped, and reasoning under
    all of its names (``reasoning_content``, ``thinking``) when a message has it under one."""
    out = []
    for m in messages:
        if m.get("reasoning_content") is None and len(m) <= 3 and m.get("content") is not None and \
                m.keys() <= {"role", "content", "reasoning_content"}:
            out.append({"role": m.get("role"), "content": m["content"]} if "role" in m else {"content": m["content"]})
            continue
        m = {k: v for k, v in m.items() if v is not None}
        reasoning = next((m[k] for k in REASONING_FIELDS if k in m), None)
        if reasoning is not None:
            m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
        out.append(m)
    return out


class Sentinels:
    """A conversation's texts and its shape, and the conversation with sentinel texts."""

    __slots__ = ("_messages", "_roles", "texts", "owner", "key")

    def __init__(self, messages: list[dict] | None, texts: list[str], owner: list[int], key: str, *,
                 roles: list[str] | None = None):
        self._messages = messages  # None: made from ``roles`` when asked (plain messages)
        self._roles = roles
        self.texts = texts  # the real text of sentinel n
        self.owner = owner  # the message sentinel n stands in
        self.key = key  # the conversation's shape: equal keys render equal sentinel text

    @property
    def messages(self) -> list[dict]:
        """The conversation with sentinel texts (rendered once per shape)."""
        if self._messages is None:
            self._messages = [{"role": r, "content": f"{OPEN}{n}{CLOSE}"} for n, r in enumerate(self._roles)]
        return self._messages


def sentinels(messages: list[dict]) -> Sentinels:
    """Replace each message's text (content and reasoning) by sentinels, run by run."""
    roles = []
    for m in messages:  # the common conversation: each message a role and a text without think markers
        content = m.get("content")
        role = m.get("role")
        if len(m) != 2 or type(content) is not str or "think>" in content or type(role) is not str:
            return _sentinels(messages)
        roles.append(role)
    return Sentinels(None, [m["content"] for m in messages], list(range(len(messages))), "\x00".join(roles),
                     roles=roles)


def _sentinels(messages: list[dict]) -> Sentinels:
    texts: list[str] = []
    owner: list[int] = []
    out = []
    key = []
    for i, m in enumerate(messages):
        content = m.get("content")
        if len(m) == 2 and isinstance(content, str) and "think>" not in content and "role" in m:
            # the common message: a role and a text without think markers (no dict copy, no regex)
            out.append({"role": m["role"], "content": f"{OPEN}{len(texts)}{CLOSE}"})
            texts.append(content)
            owner.append(i)
            key.append(m["role"])
            continue
        m = dict(m)
        done: dict[str, str] = {}  # the aliases of one reasoning text share its sentinels
        for field in ("content",) + REASONING_FIELDS:
            value = m.get(field)
            if not isinstance(value, str):
                continue
            if field in REASONING_FIELDS and value in done:
                m[field] = done[value]
                continue
            parts = []
            for run in THINK.split(value):
                if run in ("<think>", "</think>"):
                    parts.append(run)
                elif run or not parts:  # an empty text keeps one (empty) sentinel
                    parts.append(f"{OPEN}{len(texts)}{CLOSE}")
                    texts.append(run)
                    owner.append(i)
            m[field] = done[value] = "".join(parts)
        out.append(m)
        key.append(repr(m))
    return Sentinels(out, texts, owner, "\x00".join(key))


@dataclass
class Scaffold:
    """A sentinel render cut at its sentinels: ``pieces[j]`` comes before sentinel ``ids[j]``."""
    pieces: list[str]
    ids: list[int]

    @classmethod
    def of(cls, rendered: str) -> "Scaffold":
        parts = SENTINEL.split(rendered)
        return cls(parts[0::2], [int(n) for n in parts[1::2]])


def _candidates(text: str):
    """How a template may print ``text``: whole, or with white space cut from its ends (longest first)."""
    yield text
    core = text.strip()
    lead = text[:len(text) - len(text.lstrip())]
    trail = text[len(text.rstrip()):]
    if not core:
        lead, trail = text, ""
    for k in range(len(lead) + 1):
        for t in range(len(trail), -1, -1):
            if k or t < len(trail):
                yield lead[k:] + core + trail[:t]


def parse(rendered: str, scaffold: Scaffold, texts: list[str]) -> tuple[list[int], list[tuple[int, int]]] | int:
    """Map ``rendered`` through ``scaffold``: where each piece starts and where each sentinel's
    text lies, or the index of the first sentinel that cannot be matched (-1: the start)."""
    pieces, ids = scaffold.pieces, scaffold.ids
    if not rendered.startswith(pieces[0]):
        return -1
    at = [0]
    where = []
    pos = len(pieces[0])
    for j, n in enumerate(ids):
        nxt = pieces[j + 1]
        last = j + 1 == len(ids)
        x = texts[n]
        end = pos + len(x)
        if not (rendered.startswith(x, pos) and rendered.startswith(nxt, end)
                and (not last or end + len(nxt) == len(rendered))):
            for x in _candidates(texts[n]):
                end = pos + len(x)
                if rendered.startswith(x, pos) and rendered.startswith(nxt, end) \
                        and (not last or end + len(nxt) == len(rendered)):
                    break
            else:
                return j
        where.append((pos, end))
        at.append(end)
        pos = end + len(nxt)
    if pos != len(rendered):
        return len(ids) - 1 if ids else -1
    return at, where


def common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


class Locator:
    """Finds each assistant turn: from the end of its generation prompt to the end of its
    end-of-turn token (the first markup token after its text), in the real render."""

    def __init__(self, markup: list[str]):
        markup = sorted({t for t in markup if t}, key=len, reverse=True)
        self.markup = re.compile("|".join(map(re.escape, markup))) if markup else None

    def header_end(self, before: str, prompt_tail: str, generation: str) -> int | None:
        """Where the generation prompt ends inside ``before`` (the scaffolding before an
        assistant's text). ``prompt_tail`` is the inference prompt after its last message text:
        that message's closing markup, then the generation prompt ``generation``. The header
        is the longest start of ``prompt_tail`` that ``before`` starts with; it must hold all of
        the closing markup and, when the generation prompt is not whole in it (DeepSeek-R1's ends
        in ``<think>\\n``, which the rendered turn lacks), end with a whole markup token."""
        n = common_prefix(before, prompt_tail)
        close = len(prompt_tail) - len(generation)
        if n == len(prompt_tail):
            return n
        if n < close or (generation and n == close):
            return None
        if self.markup is None:
            return None
        ends = {m.end() for m in self.markup.finditer(prompt_tail, close)}
        while n > close and n not in ends:
            n -= 1
        return n if n > close else None

    def end_of_turn(self, after: str) -> int:
        """Chars of ``after`` (the scaffolding after an assistant's text) up to and including its
        first markup token; 0 when there is none (the turn then ends with its text)."""
        m = self.markup.search(after) if self.markup is not None else None
        return m.end() if m else 0


def turn_error(where: str, i: int, why: str) -> TemplateError:
    return TemplateError(f"{where}: field 'messages[{i}]': {why}, so its assistant span cannot be located exactly")
