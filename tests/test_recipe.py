import dataclasses
import json
import re
from pathlib import Path

import pytest

from datakit import recipe as R
from datakit.errors import RecipeError
from datakit.recipe_files import check_files, parse_yaml

ROOT = Path(__file__).resolve().parents[1]


def base(**over):
    data = {"tokenizer": "tok", "sources": [{"path": "a.txt"}],
            "transforms": [{"tokenize": {}}, {"pack": {"block_size": 8}}], "output": "out"}
    data.update(over)
    return data


def test_valid_recipe_resolves_paths_against_its_folder(tmp_path):
    (tmp_path / "tok").mkdir()
    r = R.from_dict(base(), base_dir=tmp_path)
    assert r.sources[0].path == str(tmp_path / "a.txt")
    assert r.output == str(tmp_path / "out")
    assert r.tokenizer == str(tmp_path / "tok")
    assert r.step("pack") == R.PackOptions(block_size=8)
    assert r.split == R.SplitConfig()


def test_every_problem_is_reported_with_its_path():
    data = base(transforms=[{"tokenize": {"cutof_len": 3}}, {"pack": {"block_size": 1, "eos": "sometimes"}}],
                split={"val_set_size": -1}, extra=1)
    with pytest.raises(RecipeError) as e:
        R.from_dict(data)
    problems = e.value.problems
    assert "transforms[1].pack.block_size: must be >= 2" in problems
    assert any(p.startswith("transforms[1].pack.eos: must be one of per_document, per_block") for p in problems)
    assert any(p.startswith("transforms[0].tokenize: unknown key 'cutof_len'") for p in problems)
    assert "split.val_set_size: must be >= 0" in problems
    assert any(p.startswith("(recipe): unknown key 'extra'") for p in problems)
    assert len(problems) == 5


def test_unknown_step_and_missing_keys():
    with pytest.raises(RecipeError) as e:
        R.from_dict({"sources": [], "transforms": [{"shuffle": {}}]})
    text = str(e.value)
    assert "missing required key 'tokenizer'" in text and "'output'" in text
    assert "transforms[0].shuffle: unknown step 'shuffle'" in text
    assert "sources: must have at least 1 item(s)" in text


@pytest.mark.parametrize("data, message", [
    (base(transforms=[{"pack": {"block_size": 8}}]), "a `tokenize` step is required"),
    (base(transforms=[{"pack": {"block_size": 8}}, {"tokenize": {}}]), "pack: must come after `tokenize`"),
    (base(sources=[{"path": "a.json", "format": "alpaca"}], transforms=[{"tokenize": {}}]), "need a `template` step"),
    (base(transforms=[{"tokenize": {}}]), "text sources need a `pack` step"),
    (base(sources=[{"path": "a.json", "format": "alpaca", "document_separator": "x"}],
          transforms=[{"template": "alpaca"}, {"tokenize": {}}]), "document_separator: only applies"),
    (base(sources=[{"path": "a.json", "format": "alpaca"}],
          transforms=[{"template": "alpaca"}, {"tokenize": {}}, {"pack": {"block_size": 8, "eos": "per_block"}}]),
     r"transforms\[2\].pack.eos: applies to text sources, not instruction rows"),
    (base(transforms=[{"tokenize": {}}, {"pack": {"block_size": 8, "strategy": "bfd"}}]),
     r"transforms\[1\].pack.strategy: applies to instruction sources, not text documents"),
    (base(sources=[{"path": "a.json", "format": "alpaca", "columns": {"instrution": "question"}}],
          transforms=[{"template": "alpaca"}, {"tokenize": {}}]),
     r"sources\[0\].columns.instrution: format alpaca has no field 'instrution' to rename \(its fields: instruction,"),
    (base(transforms=[{"tokenize": {}}, {"tokenize": {}}, {"pack": {"block_size": 8}}]),
     r"transforms\[1\].tokenize: a recipe has one `tokenize` step \(the first is transforms\[0\]\)"),
    (base(transforms=[{"tokenize": {}}, {"pack": {"block_size": 8}}, {"pack": {"block_size": 16}}]),
     r"transforms\[2\].pack: a recipe has one `pack` step"),
])
def test_semantic_problems(data, message):
    with pytest.raises(RecipeError, match=message):
        R.from_dict(data)


@pytest.mark.parametrize("data, message", [
    (base(split={"val_set_size": float("nan")}), r"split.val_set_size: must be a finite number, not nan"),
    (base(sources=[{"path": "a.jsonl", "weight": float("inf")}]), r"sources\[0\].weight: must be a finite number, not inf"),
    (base(sources=[{"path": "a.jsonl", "repeat": float("-inf")}]), r"sources\[0\].repeat: must be a finite number"),
    (base(transforms=[{"dedup": {"threshold": float("nan")}}, {"tokenize": {}}, {"pack": {"block_size": 8}}]),
     r"transforms\[0\].dedup.threshold: must be a finite number"),
    (base(split={"seed": -1}), r"split.seed: must be >= 0"),
    (base(transforms=[{"dedup": {"fields": []}}, {"tokenize": {}}, {"pack": {"block_size": 8}}]),
     r"transforms\[0\].dedup.fields: must have at least 1 item"),
    (base(transforms=[{"tokenize": {}}, {"pack": {"block_size": 2**31}}]), r"transforms\[1\].pack.block_size: must be <= 16777216"),
])
def test_numbers_out_of_every_bound(data, message):
    """NaN compares false with every bound of the schema, so it is refused on its own; a negative
    seed and a block larger than any context are refused by the schema."""
    with pytest.raises(RecipeError, match=message):
        R.from_dict(data)


def test_instruction_rows_can_be_packed():
    r = R.from_dict(base(sources=[{"path": "a.json", "format": "alpaca"}],
                         transforms=[{"template": "alpaca"}, {"tokenize": {}}, {"pack": {"block_size": 64}}]))
    assert r.step("pack") == R.PackOptions(block_size=64, strategy="bfd", pad_to_block_size=True)


def test_broken_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("tokenizer: x\nsources: [\n  - path: a\n", encoding="utf-8")
    with pytest.raises(RecipeError) as e:
        R.load_recipe(p)
    assert str(e.value).startswith(f"{p}:3:")
    assert "invalid YAML" in str(e.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="file not found"):
        R.load_recipe(tmp_path / "nope.yaml")


def _schema_defaults(node: dict) -> dict:
    return {k: v["default"] for k, v in node.get("properties", {}).items() if "default" in v}


@pytest.mark.parametrize("definition, model", [
    ("source", R.SourceConfig), ("tokenize", R.TokenizeOptions), ("pack", R.PackOptions),
    ("dedup", R.DedupOptions), ("filter", R.FilterOptions), ("split", R.SplitConfig), ("train", R.TrainConfig),
    ("parquet_output", R.ParquetOutput), ("mds_output", R.MDSOutput),
])
def test_schema_documents_the_models_defaults(definition, model):
    node = R.schema()["definitions"][definition]
    fields = {f.name: f for f in dataclasses.fields(model)}
    assert set(node["properties"]) == set(fields), "schema keys and model fields differ"
    for key, default in _schema_defaults(node).items():
        f = fields[key]
        actual = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        assert actual == default, f"{definition}.{key}: schema says {default!r}, model says {actual!r}"


def test_top_level_schema_is_the_packaged_one():
    packaged = json.loads((ROOT / "datakit" / "schemas" / "recipe.schema.json").read_text())
    assert json.loads((ROOT / "schemas" / "recipe.schema.json").read_text()) == packaged


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_are_valid_and_name_the_schema(path):
    first = path.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=../schemas/recipe.schema.json"
    R.load_recipe(path)


def laughs(depth: int, key: str = "transforms") -> str:
    """The "billion laughs": each level is nine aliases of the one below (9**depth values)."""
    lines = ["tokenizer: tok", "output: out", "sources: [{path: a.txt}]",
             'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, depth)]
    lines.append(f"{key}: *l{depth - 1}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("depth", [6, 7, 9, 12])
@pytest.mark.parametrize("key", ["transforms", "sources"])
def test_nested_aliases_are_refused_before_validation(tmp_path, monkeypatch, depth, key):
    p = tmp_path / "r.yaml"
    p.write_text(laughs(depth, key))
    assert p.stat().st_size < 1200
    monkeypatch.setattr(R, "validate_dict", lambda data: pytest.fail("validation reached"))
    with pytest.raises(RecipeError) as e:
        R.load_recipe(p)
    # named: line 9, the anchor l5 of 9**6 values, the first to expand past the limit
    assert str(e.value) == (f"{p}:9: YAML aliases expand this recipe past 100,000 values "
                            "(nested aliases?); write the values out instead")


def test_a_few_aliases_are_fine_and_merge_keys_work(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(laughs(3) + "x: 1\n")  # 9**3 values: small enough to reach the schema
    with pytest.raises(RecipeError, match="unknown key 'l0', 'l1', 'l2', 'x'"):
        R.load_recipe(p)
    p.write_text("defaults: &d {format: text, document_separator: \"\\n\\n\"}\n"
                 "tokenizer: tok\noutput: out\n"
                 "sources: [{<<: *d, path: a.txt}, {<<: *d, path: b.txt}]\n"
                 "transforms: [{tokenize: {}}, {pack: {block_size: 8}}]\n")
    data = parse_yaml(p.read_text(), str(p))
    assert data["sources"][1] == {"format": "text", "document_separator": "\n\n", "path": "b.txt"}


def test_an_alias_inside_itself_is_refused(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("tokenizer: tok\noutput: out\nsources: &s [{path: a}, *s]\n")
    with pytest.raises(RecipeError, match=r"r.yaml:3: a YAML alias refers to itself"):
        R.load_recipe(p)


def test_a_recipe_with_a_byte_order_mark_loads(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    p = tmp_path / "r.yaml"
    p.write_bytes(b"\xef\xbb\xbf" + yaml_dump(base()).encode())
    assert R.load_recipe(p).sources[0].path == str(tmp_path / "a.txt")


def yaml_dump(data) -> str:
    import yaml

    return yaml.safe_dump(data)


def test_check_files_names_every_missing_input_tokenizer_and_template(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    data = base(tokenizer="./tokenizers/missing", sources=[
        {"path": "a.txt", "format": "alpaca"}, {"path": "nope.txt", "format": "alpaca"},
        {"path": "*.jsonl", "format": "alpaca"}, {"path": "empty", "format": "alpaca"},
        {"path": "b.json", "format": "alpaca"}],
        transforms=[{"template": "my_template.json"}, {"tokenize": {}}])
    (tmp_path / "b.json").write_text("[]")
    problems, notes = check_files(R.from_dict(data, base_dir=tmp_path))
    assert problems == [
        f"sources[1].path: {tmp_path / 'nope.txt'}: file not found",
        f"sources[2].path: {tmp_path / '*.jsonl'}: no input files match this pattern",
        f"sources[3].path: {tmp_path / 'empty'}: folder holds no readable files "
        "(.csv, .json, .jsonl, .md, .ndjson, .parquet, .text, .txt)",
        f"tokenizer: not found: {tmp_path / 'tokenizers' / 'missing'}",
        f"transforms[0].template: template file not found: {tmp_path / 'my_template.json'}",
    ] and notes == []


@pytest.mark.parametrize("offline", [False, True])
def test_a_hub_id_tokenizer_is_looked_up_in_the_cache_only(tmp_path, monkeypatch, offline):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    (tmp_path / "a.txt").write_text("x")
    problems, notes = check_files(R.from_dict(base(tokenizer="someone/tokenizer-x"), base_dir=tmp_path))
    if offline:
        assert problems == ["tokenizer: 'someone/tokenizer-x' is not a local path nor in the Hugging Face "
                            "cache, and the Hub is offline (HF_HUB_OFFLINE)"] and notes == []
    else:
        assert problems == [] and notes == ["tokenizer 'someone/tokenizer-x' is not a local path: the build "
                                            "will fetch it from the Hugging Face Hub"]
    snapshot = tmp_path / "hub" / "models--someone--tokenizer-x" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "tokenizer.json").write_text("{}")
    (tmp_path / "hub" / "models--someone--tokenizer-x" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tokenizer-x" / "refs" / "main").write_text("abc")
    assert check_files(R.from_dict(base(tokenizer="someone/tokenizer-x"), base_dir=tmp_path)) == ([], [])


def test_cli_validate_fails_in_one_line_on_a_missing_input(tmp_path, hf_tokenizer):
    from click.testing import CliRunner

    from datakit.cli import cli

    p = tmp_path / "r.yaml"
    p.write_text(yaml_dump(base(tokenizer=str(hf_tokenizer), sources=[{"path": "gone.txt"}])))
    result = CliRunner().invoke(cli, ["validate", str(p)])
    assert result.exit_code == 1
    assert result.output == f"Error: {p}: sources[0].path: {tmp_path / 'gone.txt'}: file not found\n"
    (tmp_path / "gone.txt").write_text("back")
    result = CliRunner().invoke(cli, ["validate", str(p)])
    assert result.exit_code == 0 and result.output.startswith(f"{p}: ok (pretrain")


def test_output_formats_default_to_the_hf_layout():
    node = R.schema()["definitions"]["output"]["properties"]
    assert set(node) - {"path"} == {f.name for f in dataclasses.fields(R.OutputOptions)}
    assert node["formats"]["default"] == R.OutputOptions().formats == ["hf"]
    assert node["formats"]["oneOf"][0]["$ref"] == "#/definitions/output_format"
    assert tuple(R.schema()["definitions"]["output_format"]["enum"]) == R.OUTPUT_FORMATS


@pytest.mark.parametrize("output, message", [
    ({"path": "b", "formats": ["hf", "zip"]}, "output.formats[1]: must be one of hf, parquet, megatron, mds"),
    ({"path": "b", "formats": ["hf", "hf"]}, "output.formats: lists an item twice"),
    ({"formats": ["hf"]}, "output: missing required key 'path'"),
    ({"path": "b", "parquet": {"shard_size": "12XB"}}, "output.parquet.shard_size: must be a size such as 256MB"),
    ({"path": "b", "mds": {"size_limit": 1}}, "output.mds: unknown key 'size_limit'"),
    (3, "output: must be string or object"),
])
def test_output_problems_name_the_key(output, message):
    data = {"tokenizer": "t", "sources": [{"path": "a"}], "transforms": [{"tokenize": {}}, {"pack": {"block_size": 8}}],
            "output": output}
    with pytest.raises(RecipeError, match=re.escape(message)):
        R.from_dict(data)


def test_output_takes_a_path_or_a_path_with_formats(tmp_path):
    data = {"tokenizer": "t", "sources": [{"path": "a"}], "transforms": [{"tokenize": {}}, {"pack": {"block_size": 8}}]}
    plain = R.from_dict({**data, "output": "out"}, base_dir=tmp_path)
    full = R.from_dict({**data, "output": {"path": "out", "formats": "parquet", "parquet": {"shard_size": "1GB"}}},
                       base_dir=tmp_path)
    assert plain.output == full.output == str(tmp_path / "out")
    assert plain.output_options == R.OutputOptions()
    assert full.output_options.formats == ["parquet"] and full.output_options.parquet.shard_size == "1GB"


@pytest.mark.parametrize("command", ["validate", "build"])
def test_cli_refuses_a_billion_laughs_in_one_line(tmp_path, command):
    from click.testing import CliRunner

    from datakit.cli import cli

    p = tmp_path / "r.yaml"
    p.write_text(laughs(9))
    result = CliRunner().invoke(cli, [command, str(p)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [f"Error: {p}:9: YAML aliases expand this recipe past 100,000 values "
                                          "(nested aliases?); write the values out instead"]


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "tok").mkdir(), "tok holds no tokenizer (tokenizer.json, tekken.json"),
    (lambda d: (d / "tok").write_bytes(b"GGUF\x03\x00"), "a GGUF file is not supported"),
    (lambda d: (d / "tok").write_text('{"not": "a tokenizer"}'), "neither a tokenizer.json nor a tekken.json"),
])
def test_check_files_recognizes_a_tokenizer_by_content(tmp_path, make, message):
    (tmp_path / "a.txt").write_text("x")
    make(tmp_path)
    problems, _ = check_files(R.from_dict(base(tokenizer="./tok"), base_dir=tmp_path))
    assert len(problems) == 1 and problems[0].startswith("tokenizer: ") and message in problems[0]


def test_check_files_accepts_the_test_tokenizers(tmp_path, hf_tokenizer, spm_model):
    (tmp_path / "a.txt").write_text("x")
    for tok in (hf_tokenizer, hf_tokenizer / "tokenizer.json", spm_model):
        assert check_files(R.from_dict(base(tokenizer=str(tok)), base_dir=tmp_path)) == ([], [])


def test_a_key_given_twice_names_both_lines(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("tokenizer: x\nsources:\n  - path: a.jsonl\nsplit:\n  val_set_size: 10\n  seed: 1\n"
                 "  val_set_size: 20\noutput: b\n")
    with pytest.raises(RecipeError) as e:
        R.load_recipe(p)
    assert str(e.value) == f"{p}:7: key 'val_set_size' appears twice in one mapping (lines 5 and 7); keep one"
