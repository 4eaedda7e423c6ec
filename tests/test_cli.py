"""The command line: help everywhere, one clean line and exit code 1 for every kind of bad input."""
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from datakit.cli import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_help_with_an_example(name):
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output, f"{name} --help has no Example block"


def _recipe(tmp_path, src, tokenizer, **extra):
    import yaml

    data = {"tokenizer": str(tokenizer), "sources": [{"path": str(src), **extra}],
            "transforms": [{"tokenize": {}}, {"pack": {"block_size": 8}}], "output": str(tmp_path / "out")}
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


BAD = {
    "malformed_json": ('{"text": "fine"}\n{"text": "broken\n', "d.jsonl:2: malformed JSON"),
    "missing_text": ('{"text": "ok"}\n{"body": "x"}\n', "d.jsonl:2: field 'text': missing"),
    "non_string_text": ('{"text": 5}\n', "d.jsonl:1: field 'text': must be a string, got int"),
    "invalid_utf8": (b'{"text": "ok"}\n{"text": "\xff"}\n', "d.jsonl:2: invalid UTF-8"),
    "empty": ("", "d.jsonl: empty input: no records"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gives_one_line_and_exit_1(tmp_path, hf_tokenizer, case):
    content, expected = BAD[case]
    src = tmp_path / "d.jsonl"
    src.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = CliRunner().invoke(cli, ["build", str(_recipe(tmp_path, src, hf_tokenizer)), "--silent"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert expected in lines[0]
    assert str(src) in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case, expected", [
    ("missing_file", "file not found"),
    ("bad_tokenizer", "tokenizer not found"),
])
def test_missing_paths(tmp_path, hf_tokenizer, case, expected):
    src = tmp_path / "d.jsonl"
    tok = hf_tokenizer
    if case == "missing_file":
        src = tmp_path / "nope.jsonl"
    else:
        src.write_text('{"text": "x"}\n')
        tok = tmp_path / "no_tokenizer.model"
    result = CliRunner().invoke(cli, ["build", str(_recipe(tmp_path, src, tok)), "--silent"])
    assert result.exit_code == 1 and expected in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_invalid_recipe_lists_every_problem(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("tokenizer: t\nsources: [{path: a, fromat: text}]\ntransforms: [{pack: {block_size: 1}}]\noutput: o\n")
    for command in (["validate", str(p)], ["build", str(p)]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 1
        assert "sources[0]: unknown key 'fromat'" in result.output
        assert "transforms[0].pack.block_size: must be >= 2" in result.output


def test_debug_shows_the_traceback(tmp_path):
    result = CliRunner().invoke(cli, ["build", str(tmp_path / "missing.yaml"), "--debug"])
    assert result.exit_code == 1
    assert result.exception is not None and type(result.exception).__name__ == "RecipeError"


def test_build_prints_a_summary_and_refuses_to_clobber(tmp_path, hf_tokenizer):
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"text": f"document number {i} " * 5}) + "\n" for i in range(20)))
    r = _recipe(tmp_path, src, hf_tokenizer)
    runner = CliRunner()
    result = runner.invoke(cli, ["build", str(r)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "blocks" in result.output and "build:" in result.output
    again = runner.invoke(cli, ["build", str(r)])
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert runner.invoke(cli, ["build", str(r), "--overwrite", "--silent"]).output == ""


def test_shipped_example_recipes_build(tmp_path):
    for name in ("pretrain", "alpaca", "alpaca_packed", "chat", "mix"):
        result = CliRunner().invoke(cli, ["build", str(ROOT / "recipes" / f"{name}.yaml"), "--silent",
                                          "--output", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        assert (tmp_path / name / "manifest.json").is_file()
