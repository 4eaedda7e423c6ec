import dataclasses
import json
from pathlib import Path

import pytest

from datakit import recipe as R
from datakit.errors import RecipeError

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
])
def test_semantic_problems(data, message):
    with pytest.raises(RecipeError, match=message):
        R.from_dict(data)


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
