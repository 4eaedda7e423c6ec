"""The sandbox chat templates render in: transformers' Jinja environment, with limits.

A chat template is code from a model repository. Jinja's ``ImmutableSandboxedEnvironment`` stops
it from reaching Python internals, as in transformers; on top of that every render here has
- a time limit (``RENDER_SECONDS``): a watchdog thread raises ``RenderLimit`` inside a render that
  runs longer, so ``{% for a in s %}{% for b in s %}...`` over long strings stops in about a second
  instead of running for ever (and Ctrl-C is not held up by it);
- an output limit (``output_limit``): the text is streamed and a render that writes more is
  stopped, and ``*``, ``**``, ``%``, ``center`` and ``indent`` refuse results past it up front,
  because one such operation can allocate gigabytes before any check runs;
- no callables in the text: ``{{ message.items }}`` would print a memory address
  (``<built-in method ...at 0x7f...>``), which makes two builds of the same recipe differ.
``strftime_now`` prints a fixed date (1970-01-01, in the template's format), so a build never
depends on the day it runs.
"""
from __future__ import annotations

import ctypes
import json
import re
import threading
import time
from datetime import datetime

from jinja2 import Undefined

from ..errors import TemplateError

RENDER_SECONDS = 1.0  # a real template renders a conversation in well under a millisecond
MIN_OUTPUT = 1 << 24  # characters; a row may always render this much (16 M)
OUTPUT_FACTOR = 8  # ...or this many times the characters of its messages, whichever is more
FIXED_DATE = datetime(1970, 1, 1)
_WIDE_FORMAT = re.compile(r"%[-+ #0]*(\d{7,}|\*)")  # a printf width or precision of a million or more


class RenderLimit(Exception):
    """A render ran past its time or output limit (raised inside the render)."""


class _Watchdog:
    """One thread that stops renders running past their deadline, by raising ``RenderLimit``
    in the rendering thread (``PyThreadState_SetAsyncExc``, checked between bytecodes)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.deadlines: dict[int, float] = {}
        self.thread: threading.Thread | None = None

    def start(self, seconds: float) -> None:
        # one dict store, atomic under the GIL: no lock on the path every render takes
        self.deadlines[threading.get_ident()] = time.monotonic() + seconds
        if self.thread is None:
            with self.lock:
                if self.thread is None:
                    self.thread = threading.Thread(target=self._run, name="datakit-render-watchdog", daemon=True)
                    self.thread.start()

    def stop(self) -> None:
        with self.lock:  # held while the watchdog raises: no exception lands after a render ended
            self.deadlines.pop(threading.get_ident(), None)

    def _run(self) -> None:
        while True:
            time.sleep(0.05)
            now = time.monotonic()
            with self.lock:
                for ident, deadline in list(self.deadlines.items()):
                    if now > deadline:
                        del self.deadlines[ident]
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                                                   ctypes.py_object(RenderLimit))


WATCHDOG = _Watchdog()


def _refuse_callable(value):
    if callable(value) and not isinstance(value, (str, Undefined)):  # an undefined name prints "", as in transformers
        raise TemplateError("it prints a callable (its text would hold a memory address, which changes from "
                            "run to run)")
    return value


def _too_long(n: int, limit: int) -> None:
    if n > limit:
        raise RenderLimit()


_LIMIT = threading.local()  # the output limit of the render running on this thread


def output_limit() -> int:
    return getattr(_LIMIT, "chars", MIN_OUTPUT)


def _jinja_types():
    """The Jinja classes of the environment: the ``generation`` tag, the environment that checks
    ``*``, ``**`` and ``%`` against the output limit, and transformers' namespace. (Jinja is
    imported only when a chat template is rendered.)"""
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2.utils import Namespace

    class GenerationTag(Extension):
        """Accepts ``{% generation %}...{% endgeneration %}`` and renders its body as it is."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    class Limited(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**", "%"])

        def call_binop(self, context, operator, left, right):
            limit = output_limit()
            if operator == "*" and isinstance(right, int) and isinstance(left, (str, list, tuple)):
                _too_long(len(left) * right, limit)
            elif operator == "*" and isinstance(left, int) and isinstance(right, (str, list, tuple)):
                _too_long(len(right) * left, limit)
            elif operator == "**" and isinstance(left, int) and isinstance(right, int):
                _too_long(abs(right) * max(abs(left), 2).bit_length() // 8, limit)
            elif operator == "%" and isinstance(left, str) and _WIDE_FORMAT.search(left):
                raise RenderLimit()
            return super().call_binop(context, operator, left, right)

    class TemplateNamespace(Namespace):
        """transformers' namespace: no underscore names (they lead to CPython internals)."""

        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check(name)
            Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            TemplateNamespace._check(name)
            Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise TemplateError(f"namespace attribute {name!r} starts with an underscore")

    return GenerationTag, Limited, TemplateNamespace


def make_environment():
    """transformers' chat-template environment, with the limits above."""
    from jinja2.ext import loopcontrols

    GenerationTag, Limited, TemplateNamespace = _jinja_types()

    def raise_exception(message):
        raise TemplateError(f"it raised: {message}")

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def checked(filter_name, width_arg):
        base = env.filters[filter_name]

        def run(value, *args, **kwargs):
            width = kwargs.get(width_arg, args[0] if args else 0)
            if isinstance(width, int):
                _too_long(width * (str(value).count("\n") + 1), output_limit())
            return base(value, *args, **kwargs)
        return run

    env = Limited(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols],
                  finalize=_refuse_callable)
    env.filters["tojson"] = tojson
    env.filters["center"] = checked("center", "width")
    env.filters["indent"] = checked("indent", "width")
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: FIXED_DATE.strftime(fmt)  # a build never depends on the day
    env.globals["dict"] = dict
    env.globals["namespace"] = TemplateNamespace
    return env


def render_limited(template, variables: dict, *, limit: int) -> str:
    """Render with the time limit and an output limit of ``limit`` characters; raises RenderLimit."""
    _LIMIT.chars = limit
    WATCHDOG.start(RENDER_SECONDS)
    try:
        try:
            parts, n = [], 0
            # the context jinja's new_context(variables, shared=True) makes: ``variables`` already
            # hold the template's globals (see ChatTemplate), so they are not copied for every
            # render, nor listed (globals_keys only serves ``{% import ... with context %}``,
            # which needs a loader the sandbox does not have)
            context = template.environment.context_class(template.environment, variables, template.name,
                                                         template.blocks)
            for chunk in template.root_render_func(context):
                n += len(chunk)
                if n > limit:
                    raise RenderLimit()
                parts.append(chunk)
        finally:
            WATCHDOG.stop()
    except RecursionError:
        raise RenderLimit() from None
    return "".join(parts)
