"""`datakit train` end to end on the CPU with a tiny random Llama (no downloads)."""
import dataclasses
import json

import pytest

torch = pytest.importorskip("torch", reason="the [train] extra is not installed")
pytest.importorskip("peft")

import datakit  # noqa: E402
from datakit.errors import TrainError  # noqa: E402
from datakit.train import Collator, TrainConfig, train  # noqa: E402

def test_training_lowers_the_loss_evaluates_saves_and_plots_on_schedule(built, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from datakit.train.plot import curve

    data, model = built
    cfg = TrainConfig(max_steps=20, batch_size=4, micro_batch_size=4, learning_rate=3e-2, warmup_steps=0,
                      logging_steps=5, eval_steps=10, save_steps=5, save_total_limit=2, lora_r=8, lora_alpha=16,
                      lora_dropout=0.0, lora_target_modules="all-linear")
    result = train(data, model=str(model), config=cfg, output_dir=tmp_path / "out", silent=True)
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert len(losses) == 4 and losses[-1] < losses[0] - 1.0, losses
    # evaluation at eval_steps, not at every logging step; the last one is not repeated
    assert [h["step"] for h in result.log_history if "eval_loss" in h] == [10, 20]
    assert "eval_loss" in result.metrics
    out = result.output_dir
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-15", "checkpoint-20"]
    assert (out / "adapter_config.json").is_file() and (out / "trainer_state.json").is_file()
    assert (out / "tokenizer.json").is_file()
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert {m.rsplit(".", 1)[-1] for m in adapter["target_modules"]} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"}  # all-linear: every linear layer but lm_head
    png = (out / "loss.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    state = json.loads((out / "trainer_state.json").read_text())
    assert [s for s, _ in curve(state["log_history"])["loss"]] == [5, 10, 15, 20]
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(model)), str(out)).eval()
    trained = result.model.eval()
    batch = torch.tensor([datakit.load(data)["train"][0]["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(trained(batch).logits, reloaded(batch).logits, atol=1e-5)


def test_masked_tokens_do_not_count_in_the_loss(built):
    from transformers import AutoModelForCausalLM

    data, model = built
    rows = [datakit.load(data)["train"][i] for i in range(3)]
    eos = 2
    batch = Collator(pad_id=eos)(rows)  # pad == eos, as for a tokenizer without a pad token
    lengths = [len(r["input_ids"]) for r in rows]
    for k, n in enumerate(lengths):
        assert (batch["labels"][k, n:] == -100).all() and (batch["attention_mask"][k, n:] == 0).all()
        assert batch["labels"][k, n - 1] == eos  # the real EOS keeps its label
    m = AutoModelForCausalLM.from_pretrained(str(model)).eval()
    with torch.no_grad():
        out = m(**batch)
    logits = out.logits[:, :-1].reshape(-1, out.logits.size(-1))
    labels = batch["labels"][:, 1:].reshape(-1)
    keep = labels != -100
    manual = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    assert torch.allclose(out.loss, manual, atol=1e-5)
    full = torch.nn.functional.cross_entropy(logits, batch["input_ids"][:, 1:].reshape(-1))
    assert not torch.allclose(out.loss, full, atol=1e-3)


def test_clear_errors(built, tmp_path, monkeypatch, make_llama):
    from datasets import Dataset, DatasetDict

    data, model = built
    small = make_llama(tmp_path / "small", 100)
    with pytest.raises(TrainError, match="1000 tokens.*has 100 embeddings"):
        train(data, model=str(small), config=TrainConfig(max_steps=1), silent=True)
    nolabels = tmp_path / "nolabels"
    DatasetDict(train=Dataset.from_dict({"input_ids": [[1, 5, 2]]})).save_to_disk(str(nolabels))
    (nolabels / "manifest.json").write_text((data / "manifest.json").read_text())
    with pytest.raises(TrainError, match="has no labels column"):
        train(nolabels, model=str(model), config=TrainConfig(max_steps=1), silent=True)
    monkeypatch.setitem(__import__("sys").modules, "peft", None)
    with pytest.raises(TrainError, match=r"pip install 'datakit\[train\]'"):
        train(data, model=str(model), silent=True)


def test_cli_reads_the_recipe_train_section(built, tmp_path):
    import yaml
    from click.testing import CliRunner

    from datakit.cli import cli

    data, model = built
    recipe = yaml.safe_load((data.parent / "built.yaml").read_text())
    recipe["output"] = str(data)
    recipe["sources"][0]["path"] = str(data.parent / recipe["sources"][0]["path"])
    recipe["train"] = {"base_model": str(model), "batch_size": 2, "micro_batch_size": 1, "max_steps": 2,
                       "lora_target_modules": ["q_proj", "v_proj"], "output_dir": str(tmp_path / "cli")}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "r.yaml"), "--learning-rate", "1e-3", "--silent"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "cli" / "datakit_train.json").read_text())
    assert saved["config"]["learning_rate"] == 1e-3 and saved["config"]["micro_batch_size"] == 1
    adapter = json.loads((tmp_path / "cli" / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]


def test_example_training_script_runs(built, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    data, model = built
    script = Path(__file__).resolve().parents[2] / "examples" / "train_lora.py"
    out = subprocess.run([sys.executable, str(script), str(data), str(model), "--steps", "3", "--batch", "2"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "step 1 loss" in out.stdout and (tmp_path / "lora-adapter" / "adapter_config.json").is_file()


def test_resume_from_checkpoint_and_a_pretraining_build(built, tmp_path, hf_tokenizer):
    import yaml

    data, model = built
    cfg = TrainConfig(max_steps=2, batch_size=2, micro_batch_size=2, save_steps=2, logging_steps=1, warmup_steps=0)
    first = train(data, model=str(model), config=cfg, output_dir=tmp_path / "run", silent=True)
    assert (tmp_path / "run" / "checkpoint-2").is_dir()
    resumed = train(data, model=str(model), config=dataclasses.replace(cfg, max_steps=3),
                    output_dir=tmp_path / "run", resume_from_checkpoint=True, silent=True)
    steps = [h["step"] for h in resumed.log_history if "loss" in h]
    assert steps == [1, 2, 3] and first.metrics["train_loss"] > 0  # steps 1-2 come from the checkpoint's state
    (tmp_path / "c.txt").write_text("Blocks of text for pretraining. " * 40)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({
        "tokenizer": str(hf_tokenizer), "sources": [{"path": "c.txt"}],
        "transforms": [{"tokenize": {}}, {"pack": {"block_size": 32}}], "output": "pre"}))
    datakit.run_build(tmp_path / "p.yaml", silent=True)
    result = train(tmp_path / "pre", model=str(model),
                   config=TrainConfig(max_steps=2, batch_size=2, micro_batch_size=2, gradient_checkpointing=True),
                   output_dir=tmp_path / "pre-lora", silent=True)
    assert result.metrics["train_loss"] > 0


def test_full_fine_tuning(built, tmp_path):
    from transformers import AutoModelForCausalLM

    data, model = built
    cfg = TrainConfig(finetune="full", max_steps=2, batch_size=4, micro_batch_size=2, learning_rate=1e-2,
                      group_by_length=True, logging_steps=1)
    result = train(data, model=str(model), config=cfg, silent=True)
    assert result.output_dir == data.parent / "built-full"
    assert (result.output_dir / "model.safetensors").is_file() and not (result.output_dir / "adapter_config.json").exists()
    tuned = AutoModelForCausalLM.from_pretrained(str(result.output_dir))
    base = AutoModelForCausalLM.from_pretrained(str(model))
    moved = [n for n, p in tuned.named_parameters() if not torch.equal(p, base.get_parameter(n))]
    assert len(moved) == len(list(base.parameters()))  # every weight trained, lm_head and norms too


def test_packed_build_trains_with_isolation(built, hf_tokenizer, tmp_path):
    from .conftest import RECORDS, build

    _, model = built
    packed = build(tmp_path, {"tokenizer": str(hf_tokenizer), "format": "alpaca", "split": {"val_set_size": 4},
                              "transforms": [{"template": "alpaca_short"}, {"tokenize": {"cutoff_len": 64}},
                                             {"pack": {"block_size": 96}}]}, RECORDS, "packed")
    assert "position_ids" in datakit.load(packed)["train"].column_names
    for attn in ("sdpa", "eager"):
        cfg = TrainConfig(max_steps=2, batch_size=2, micro_batch_size=2, attn_implementation=attn)
        result = train(packed, model=str(model), config=cfg, output_dir=tmp_path / attn, silent=True)
        saved = json.loads((result.output_dir / "datakit_train.json").read_text())
        assert saved["packed"] is True and saved["attn_implementation"] == attn
        assert result.metrics["train_loss"] > 0 and result.metrics["eval_loss"] > 0


def test_silent_is_silent_and_inspect_prints_the_curve(built, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from click.testing import CliRunner

    from datakit.cli import cli

    data, model = built
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-m", "datakit", "train", "--data", str(data), "--model", str(model),
                          "--max-steps", "3", "--batch-size", "2", "--micro-batch-size", "2", "--logging-steps", "1",
                          "--output-dir", str(tmp_path / "run"), "--silent"],
                         capture_output=True, text=True, timeout=600, cwd=root)
    assert out.returncode == 0 and out.stdout == "" and out.stderr == "", out.stdout + out.stderr
    shown = CliRunner().invoke(cli, ["inspect", str(tmp_path / "run")])
    assert shown.exit_code == 0, shown.output
    history = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    rows = {int(line.split()[0]): line.split()[1:] for line in shown.output.splitlines() if line.split()[0].isdigit()}
    logged = {h["step"]: h for h in history if "loss" in h}
    assert sorted(rows) == sorted(logged) == [1, 2, 3]
    for step, h in logged.items():
        assert float(rows[step][0]) == pytest.approx(h["loss"], abs=5e-5)
        assert float(rows[step][-1]) == pytest.approx(h["learning_rate"], rel=1e-3)
    assert "eval_loss" in shown.output and "loss.png" in shown.output
