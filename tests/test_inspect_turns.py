"""``inspect --turns``: rows cut into their conversation's turns, with roles and counts per role."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from datakit.cli import cli
from datakit.inspect import open_build
from datakit.inspect_turns import layout, row_turns

CONVERSATIONS = [
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <|im_end|> there"},
     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}],
    [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！🙂"}],
]
INST = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
        "{% elif m['role'] == 'assistant' %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}")


def _build(make_recipe, write_jsonl, tmp_path, tokenizer, chat_template=None, name="b"):
    import datakit

    data = write_jsonl(f"{name}.jsonl", [{"messages": c} for c in CONVERSATIONS])
    recipe = {"tokenizer": str(tokenizer), "sources": [{"path": str(data), "format": "messages"}],
              "transforms": [{"template": "chat"}, {"tokenize": {}}],
              "split": {"val_set_size": 0, "shuffle": False}, "output": str(tmp_path / name)}
    if chat_template:
        recipe["chat_template"] = chat_template
    datakit.build(make_recipe(recipe, name=f"{name}.yaml"), overwrite=True)
    return open_build(tmp_path / name)


@pytest.mark.parametrize("template, roles", [
    (None, [["system", "user", "assistant", "user", "assistant"], ["user", "assistant"]]),
    (INST, [["user", "assistant", "user", "assistant"], ["user", "assistant"]]),  # no system in this template
])
def test_turns_have_the_conversations_roles_and_all_the_rows_tokens(make_recipe, write_jsonl, tmp_path,
                                                                     hf_tokenizer, template, roles):
    build = _build(make_recipe, write_jsonl, tmp_path, hf_tokenizer, template)
    lay = layout(build)
    for i, expected in enumerate(roles):
        row = build.row("train", i)
        turns = row_turns(build, "train", i, lay)
        assert [t.role for t in turns] == expected
        assert sum(t.tokens for t in turns) == len(row["input_ids"])
        assert sum(t.trained for t in turns if t.role == "assistant") == int((row["labels"] != -100).sum())
        assert all(t.trained == 0 for t in turns if t.role != "assistant")


def test_cli_and_html_show_turns_and_counts_per_role(make_recipe, write_jsonl, tmp_path, hf_tokenizer):
    _build(make_recipe, write_jsonl, tmp_path, hf_tokenizer)
    out = CliRunner().invoke(cli, ["inspect", str(tmp_path / "b"), "--row", "0", "--turns", "--no-color"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].startswith("[train row 0] 5 turns")
    assert [ln.split()[1] for ln in lines[1:6]] == ["system", "user", "assistant", "user", "assistant"]
    assert "«Hello.<|im_end|>»" in lines[3]
    assert lines[6].startswith("  per role: system ")
    page = tmp_path / "p.html"
    out = CliRunner().invoke(cli, ["inspect", str(tmp_path / "b"), "--row", "0", "--html", str(page)])
    assert out.exit_code == 0, out.output
    assert "turn by turn: 5 turns; system" in page.read_text("utf-8")


def test_alpaca_builds_show_prompt_and_response(make_recipe, write_jsonl, tmp_path, hf_tokenizer):
    import datakit

    data = tmp_path / "a.json"
    data.write_text(json.dumps([{"instruction": "Say hi.", "input": "", "output": "Hi!"}]))
    recipe = make_recipe({"tokenizer": str(hf_tokenizer), "sources": [{"path": str(data), "format": "alpaca"}],
                          "transforms": [{"template": "alpaca"}, {"tokenize": {}}], "output": str(tmp_path / "a")})
    datakit.build(recipe, overwrite=True)
    build = open_build(tmp_path / "a")
    assert layout(build) is None
    assert [t.role for t in row_turns(build, "train", 0, None)] == ["prompt", "response"]
