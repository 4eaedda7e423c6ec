"""``inspect --turns``: a built row cut into its conversation's turns, each with its role, its tokens
and how many of them are trained, with counts per role.

A build keeps ids and labels only, so the turns are found again from the build's chat template
(the recipe's ``chat_template``, or the tokenizer's): a probe conversation rendered with sentinel
texts (transforms/chat_locate.py) shows the markup that closes each message (its first markup
token after the text: ``<|im_end|>``, ``<|eot_id|>``, ``[/INST]``...) and the text that opens each
role (``<|im_start|>user\\n``). A turn ends after a closing markup token of the row (a special
token, never text that spells one) and takes the role whose opening text it starts with; a turn
no opening matches is ``assistant`` if it has trained tokens (Mistral's answers follow ``[/INST]``
directly), and a turn of another role that holds trained tokens is cut where they start (a
template with no markup between the prompt and the answer). The separator after an end-of-turn token is shown at the start of the next turn.
Builds made with an alpaca template are cut where the labels change: ``prompt`` and ``response``.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .inspect import TRAINED_CLOSE, TRAINED_OPEN, Build, _shown
from .pieces import Piece

PROBE = [{"role": "system", "content": "a"}, {"role": "user", "content": "b"},
         {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"},
         {"role": "assistant", "content": "e"}]


@dataclass
class Turn:
    role: str
    pieces: list[Piece]

    @property
    def tokens(self) -> int:
        return sum(len(p.positions) for p in self.pieces)

    @property
    def trained(self) -> int:
        return sum(len(p.positions) for p in self.pieces if p.trained)


@dataclass
class Layout:
    closes: set[str]  # markup tokens that end a message
    openers: list[tuple[str, str]]  # (opening text, role), longest first


def _template_source(build: Build) -> str | None:
    recipe = build.manifest.get("recipe", {})
    steps = [next(iter(s)) for s in recipe.get("transforms", []) if isinstance(s, dict)]
    template = next((s["template"] for s in recipe.get("transforms", []) if isinstance(s, dict) and "template" in s),
                    None)
    name = template.get("name") if isinstance(template, dict) else template
    if "template" not in steps or name != "chat":
        return None
    source = recipe.get("chat_template")
    if source and "{" not in source and Path(source).is_file():
        return Path(source).read_text("utf-8")
    return source or getattr(build.tokenizer, "chat_template", None)


def layout(build: Build) -> Layout | None:
    """The build's turn layout, or None when it was not made with a chat template (or its
    template or tokenizer is not at hand)."""
    from .errors import DatakitError
    from .transforms.chat import ChatTemplate
    from .transforms.chat_locate import Scaffold, sentinels

    source = _template_source(build) if build.tokenizer is not None else None
    if not source:
        return None
    chat = ChatTemplate(source, tokenizer=build.tokenizer, origin="the build's chat template")
    closes, openers = set(), set()
    for probe in (PROBE, PROBE[1:]):  # with and without a system message (some templates refuse one)
        sent = sentinels(probe)
        try:
            scaffold = Scaffold.of(chat.render(sent.messages, "probe", add_generation_prompt=False))
        except DatakitError:
            continue
        first_seen: dict[int, int] = {}
        for j, n in enumerate(scaffold.ids):
            first_seen.setdefault(sent.owner[n], j)
        for i, j in sorted(first_seen.items()):
            before = scaffold.pieces[j]  # the previous message's closing markup, then this one's opening
            close = before[:chat.locator.end_of_turn(before)] if j > 0 else ""
            if close:
                closes.add(chat.locator.markup.findall(close)[-1])
            opener = _bare(before[len(close):], build)
            if opener:
                openers.add((opener, sent.messages[i]["role"]))
    if not closes:
        return None
    return Layout(closes, sorted(openers, key=lambda o: -len(o[0])))


def _bare(text: str, build: Build) -> str:
    """An opening text without the BOS and the white space before it, as it is matched."""
    bos = getattr(build.tokenizer, "bos_token", None)
    if bos and text.startswith(bos):
        text = text[len(bos):]
    return text.lstrip()


def row_turns(build: Build, split: str, index: int, lay: Layout | None) -> list[Turn]:
    row = build.row(split, index)
    pieces = build.pieces(row)
    if lay is None:  # alpaca builds: prompt and response runs
        turns: list[Turn] = []
        for p in pieces:
            role = "response" if p.trained else "prompt"
            if not turns or turns[-1].role != role:
                turns.append(Turn(role, []))
            turns[-1].pieces.append(p)
        return turns
    segments: list[list[Piece]] = [[]]
    for p in pieces:
        segments[-1].append(p)
        if p.special and p.text in lay.closes:
            segments.append([])
    turns = []
    for seg in segments:
        if not seg:
            continue
        text = "".join(p.text for p in seg)
        bare = _bare(text, build)
        role = next((r for o, r in lay.openers if bare.startswith(o)), None)
        if role is None and any(p.trained for p in seg):
            role = "assistant"
        if role is None and turns:  # trailing markup (a final separator, an end-of-text token)
            turns[-1].pieces.extend(seg)
            continue
        first = next((k for k, p in enumerate(seg) if p.trained), None)
        if role not in (None, "assistant") and first:  # no markup between the prompt and the answer
            turns += [Turn(role, seg[:first]), Turn("assistant", seg[first:])]
            continue
        turns.append(Turn(role or "?", seg))
    return turns


def _plain(pieces: list[Piece]) -> str:
    out, inside = [], False
    for p in pieces:
        if p.trained != inside:
            out.append(TRAINED_OPEN if p.trained else TRAINED_CLOSE)
            inside = p.trained
        out.append(_shown(p).replace("\n", ""))
    return "".join(out) + (TRAINED_CLOSE if inside else "")


def turns_text(build: Build, split: str, index: int, *, color: bool) -> str:
    """The row turn by turn: role, tokens, trained tokens, then the tokens (trained inside «…» or
    green); and the counts per role."""
    import click

    turns = row_turns(build, split, index, layout(build))
    lines = [f"[{split} row {index}] {len(turns)} turns (trained tokens "
             + (click.style("green", fg="green", bold=True) if color else f"inside {TRAINED_OPEN}…{TRAINED_CLOSE}") + ")"]
    per_role: Counter = Counter()
    trained: Counter = Counter()
    for k, t in enumerate(turns):
        per_role[t.role] += t.tokens
        trained[t.role] += t.trained
        if color:
            body = "".join(click.style(_shown(p).replace("\n", ""), fg="green", bold=True) if p.trained
                           else click.style(_shown(p).replace("\n", ""), dim=True) for p in t.pieces)
        else:
            body = _plain(t.pieces)
        lines.append(f"  {k:>3} {t.role:<10} {t.tokens:>6} tokens {t.trained:>6} trained  {body}")
    lines.append("  per role: " + ", ".join(f"{r} {per_role[r]:,} tokens ({trained[r]:,} trained)" for r in per_role))
    return "\n".join(lines)
