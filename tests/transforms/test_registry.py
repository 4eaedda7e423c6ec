"""Every step a recipe can name is registered once: its options class (the recipe's), its factory
and the JSON schema agree, and what the factory builds keeps the step contract."""
import dataclasses
import json
from importlib import resources
from pathlib import Path

import pytest

from datakit.recipe import STEP_OPTIONS, load_recipe
from datakit.tokenization import load_tokenizer
from datakit.transforms import STEPS, Step, opened_steps
from datakit.transforms.base import SCOPES

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_registry_options_and_schema_name_the_same_steps():
    schema = json.loads(resources.files("datakit").joinpath("schemas/recipe.schema.json").read_text("utf-8"))
    names = schema["definitions"]["step"]["propertyNames"]["enum"]
    assert list(STEPS) == list(STEP_OPTIONS) == names
    assert all(STEPS[n].options is STEP_OPTIONS[n] for n in names)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("name", ["alpaca", "alpaca_packed", "chat", "mix", "pretrain"])
def test_every_example_step_keeps_the_contract(name, tmp_path):
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    rejects = tmp_path / "rejects.jsonl"
    transforms = [dataclasses.replace(t, options=dataclasses.replace(t.options, rejects=str(rejects)))
                  if t.name == "filter" else t for t in recipe.transforms]
    recipe = dataclasses.replace(recipe, transforms=transforms)
    with pytest.raises(_Stop), opened_steps(recipe, load_tokenizer(recipe.tokenizer)) as steps:
        assert [type(s).__name__ for s in steps] and len(steps) == len(recipe.transforms)
        for step in steps:
            assert isinstance(step, Step)
            assert not step.releases_gil or step.stateless, f"{type(step).__name__}: threads need stateless"
            assert step.scope in SCOPES and step.after_split == (step.scope == "split")
            assert step.scope == "shard" or not step.stateless, f"{type(step).__name__}: a wider scope has state"
        wide = {"dedup": "build", "pack": "split" if recipe.is_sft else "source"}
        assert [s.scope for s in steps] == [wide.get(t.name, "shard") for t in recipe.transforms]
        raise _Stop
    assert list(tmp_path.iterdir()) == []  # closed with ok=False: a filter leaves no rejects file
