"""The chat template sandbox's limits, and turns that cannot be located."""
from __future__ import annotations

import time

import pytest

from datakit.errors import TemplateError
from datakit.tokenization import load_tokenizer
from datakit.transforms.chat import ChatTemplate

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
CONV = [{"role": "user", "content": "x" * 10_000}, {"role": "assistant", "content": "ok"}]


@pytest.fixture
def chat(hf_tokenizer):
    tok = load_tokenizer(str(hf_tokenizer))
    return lambda source: ChatTemplate(source, tokenizer=tok, origin="t.jinja")


@pytest.mark.parametrize("source", [
    # 10^12 iterations over the message text: no range(), so only the time limit can stop it
    "{% set s = messages[0]['content'] %}{% for a in s %}{% for b in s %}{% for c in s %}{% endfor %}"
    "{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
])
def test_a_template_that_loops_for_ever_stops_within_seconds(chat, source):
    t = time.monotonic()
    with pytest.raises(TemplateError, match=r"c.jsonl:7: chat template t.jinja ran past its limits"):
        chat(source).locate(CONV, "c.jsonl:7")
    assert time.monotonic() - t < 5


@pytest.mark.parametrize("source", [
    "{{ 'x' * 1000000000 }}",  # refused before the string is made
    "{{ 'x' | center(1000000000) }}",
    "{% for i in range(100000) %}{{ messages[0]['content'] * 100 }}{% endfor %}",  # 10^11 characters, streamed
])
def test_a_template_that_writes_too_much_is_stopped(chat, source):
    with pytest.raises(TemplateError, match=r"c.jsonl:7: .*ran past its limits .*characters"):
        chat(source).locate(CONV, "c.jsonl:7")


def test_a_template_that_prints_a_callable_is_refused(chat):
    with pytest.raises(TemplateError, match=r"c.jsonl:2: .*prints a callable"):
        chat("{{ messages[0].items }}" + CHATML).locate(CONV, "c.jsonl:2")


def test_an_undefined_name_prints_nothing_as_in_transformers(chat):
    """jinja's default Undefined, which transformers' sandbox uses: ``{{ nope }}`` is empty text."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    source = "{{ undefined_name }}" + CHATML
    text, *_ = chat(source).locate(CONV, "w")
    assert text == ImmutableSandboxedEnvironment().from_string(source).render(messages=CONV)


def test_raise_exception_names_the_row_and_the_template(chat):
    with pytest.raises(TemplateError, match=r"^c.jsonl:3: chat template t.jinja: it raised: roles must alternate$"):
        chat("{{ raise_exception('roles must alternate') }}" + CHATML).locate(CONV, "c.jsonl:3")


def test_strftime_now_prints_the_fixed_date_in_the_templates_format(chat):
    text, *_ = chat("{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d') }}|" + CHATML).locate(CONV, "w")
    assert text.startswith("01 Jan 1970|1970-01-01|")


def test_a_template_that_rewrites_the_answer_is_an_error_not_a_guess(chat):
    rewrite = CHATML.replace("m['content']", "m['content'] | replace('ok', 'OK')")
    with pytest.raises(TemplateError, match=r"w: field 'messages\[1\]': the chat template prints this message"):
        chat(rewrite).locate(CONV, "w")


def test_each_turn_costs_a_constant_number_of_renders(chat):
    """Two renders per conversation (itself, and its prompt with the generation prompt), plus the
    sentinel renders of a shape not seen before."""
    t = chat(CHATML)
    calls = []
    render = t.render
    t.render = lambda *a, **k: calls.append(1) or render(*a, **k)
    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}] * 6
    t.locate(turns, "w")
    first = len(calls)
    calls.clear()
    t.locate([dict(m, content=m["content"] * 2) for m in turns], "w")
    assert (first, len(calls)) == (5, 2)


def test_an_empty_chat_template_file_is_named(hf_tokenizer, tmp_path):
    from datakit.recipe import TemplateOptions
    from datakit.transforms.template import make_template

    (tmp_path / "empty.jinja").write_text("\n")
    with pytest.raises(TemplateError, match=r"empty.jinja: the chat template file is empty"):
        make_template(TemplateOptions(name="chat"), tokenizer=load_tokenizer(str(hf_tokenizer)),
                      chat_template=str(tmp_path / "empty.jinja"))
