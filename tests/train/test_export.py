"""`datakit merge` and `train --merge`: the merged model computes what the adapter model computes."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch", reason="the [train] extra is not installed")
pytest.importorskip("peft")

import datakit  # noqa: E402
from datakit.errors import TrainError  # noqa: E402
from datakit.train import TrainConfig, train  # noqa: E402


def test_merged_model_equals_the_adapter_model(chat_built, chat_template, make_llama, tmp_path):
    from click.testing import CliRunner
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from datakit.cli import cli

    model = make_llama(tmp_path / "base", 1000)
    cfg = TrainConfig(max_steps=3, batch_size=4, micro_batch_size=4, learning_rate=5e-2, lora_dropout=0.0,
                      use_rslora=True, lora_target_modules="all-linear", merge=True)
    result = train(chat_built, model=str(model), config=cfg, output_dir=tmp_path / "lora", silent=True)
    run = CliRunner().invoke(cli, ["merge", str(result.output_dir), "--output", str(tmp_path / "merged"), "--silent"])
    assert run.exit_code == 0, run.output
    batch = torch.tensor([datakit.load(chat_built)["train"][i]["input_ids"][:16] for i in range(3)])
    base = AutoModelForCausalLM.from_pretrained(str(model)).eval()
    with torch.no_grad():
        before = base(batch).logits
        adapter = PeftModel.from_pretrained(base, str(result.output_dir)).eval()
        expected = adapter(batch).logits
        for folder in (tmp_path / "merged", result.merged_dir):
            merged = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
            got = merged(batch).logits
            assert ((got - expected).norm() / expected.norm()).item() < 1e-5, (got - expected).abs().max()
    assert (expected - before).abs().max() > 1e-2  # the adapter changed the model: the equality means something
    assert not any(n.startswith("adapter") for n in (p.name for p in (tmp_path / "merged").iterdir()))
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "merged"))
    assert tok.chat_template == chat_template  # the build's template, not the tokenizer's own ChatML
    assert json.loads((tmp_path / "merged" / "tokenizer_config.json").read_text())["chat_template"] == chat_template


def test_merge_refuses_what_it_cannot_do(chat_built, tmp_path):
    from click.testing import CliRunner

    from datakit.cli import cli

    with pytest.raises(TrainError, match="not a LoRA adapter folder"):
        datakit.train.merge(chat_built, output=tmp_path / "m")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    run = CliRunner().invoke(cli, ["merge", str(tmp_path / "adapter"), "-o", str(tmp_path / "taken")])
    assert run.exit_code == 1 and "already exists and is not empty" in run.output
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    run = CliRunner().invoke(cli, ["merge", str(tmp_path / "adapter"), "-o", str(tmp_path / "new"),
                                   "--model", str(tmp_path / "no" / "such")])
    assert run.exit_code == 1 and "does not exist" in run.output and not (tmp_path / "new").exists()
