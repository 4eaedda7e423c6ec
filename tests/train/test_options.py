"""Every `datakit train` option, from TrainConfig to the flag, the schema and the library that uses it."""
from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch", reason="the [train] extra is not installed")
pytest.importorskip("peft")

from datakit.errors import TrainError  # noqa: E402
from datakit.train.arguments import check_config, lora_config, training_arguments  # noqa: E402
from datakit.train.options import TrainConfig, defaults  # noqa: E402

# Non-default values for every option, and where each one must arrive: (TrainingArguments or
# LoraConfig attribute, expected value). Options that act elsewhere name the test that covers them.
CHANGED = dict(batch_size=24, micro_batch_size=6, num_epochs=2.5, max_steps=77, learning_rate=1e-4,
               lr_scheduler_type="cosine", warmup_ratio=0.1, weight_decay=0.01, optim="adafactor",
               max_grad_norm=0.5, lora_r=16, lora_alpha=32, lora_dropout=0.1, lora_target_modules=["q_proj", "v_proj"],
               use_dora=True, use_rslora=True, group_by_length=True, logging_steps=3, eval_steps=6, save_steps=12,
               save_total_limit=5, load_best_model_at_end=True, report_to="tensorboard", run_name="run-7", seed=7)
ARGS = {"micro_batch_size": [("per_device_train_batch_size", 6), ("per_device_eval_batch_size", 6)],
        "batch_size": [("gradient_accumulation_steps", 4)], "num_epochs": [("num_train_epochs", 2.5)],
        "max_steps": [("max_steps", 77)], "learning_rate": [("learning_rate", 1e-4)],
        "lr_scheduler_type": [("lr_scheduler_type", "cosine")], "warmup_ratio": [("warmup_steps", 0.1)],
        "weight_decay": [("weight_decay", 0.01)], "optim": [("optim", "adafactor")],
        "max_grad_norm": [("max_grad_norm", 0.5)], "group_by_length": [("train_sampling_strategy", "group_by_length")],
        "logging_steps": [("logging_steps", 3)], "eval_steps": [("eval_steps", 6)], "save_steps": [("save_steps", 12)],
        "save_total_limit": [("save_total_limit", 5)], "load_best_model_at_end": [("load_best_model_at_end", True)],
        "report_to": [("report_to", ["tensorboard"])], "run_name": [("run_name", "run-7")],
        "seed": [("seed", 7), ("data_seed", 7)]}
LORA = {"lora_r": [("r", 16)], "lora_alpha": [("lora_alpha", 32)], "lora_dropout": [("lora_dropout", 0.1)],
        "lora_target_modules": [("target_modules", {"q_proj", "v_proj"})], "use_dora": [("use_dora", True)],
        "use_rslora": [("use_rslora", True)]}
ELSEWHERE = {  # option -> the test that shows it acting
    "base_model": "test_run.py::test_cli_reads_the_recipe_train_section",
    "output_dir": "test_run.py::test_cli_reads_the_recipe_train_section",
    "finetune": "test_run.py::test_full_fine_tuning", "merge": "test_export.py",
    "trust_remote_code": "test_model.py::test_remote_code_never_runs_unless_allowed",
    "load_in_4bit": "test_model.py::test_qlora_is_configured_and_refused_on_the_cpu",
    "bf16": "test_model.py::test_precision", "fp16": "test_model.py::test_precision",
    "attn_implementation": "test_run.py::test_packed_build_trains_with_isolation",
    "gradient_checkpointing": "test_run.py::test_resume_from_checkpoint_and_a_pretraining_build",
    "warmup_steps": "test_warmup_is_sized_to_the_run"}


def test_every_option_is_accounted_for():
    assert set(CHANGED) | set(ELSEWHERE) == set(defaults())
    assert set(ARGS) | set(LORA) == set(CHANGED)
    assert all(CHANGED[k] != defaults()[k] for k in CHANGED)


def test_every_option_reaches_training_arguments_or_the_peft_config(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = TrainConfig(**CHANGED)
    args = training_arguments(cfg, output_dir=str(tmp_path), dtype="fp32", has_validation=True, cuda=False)
    for option, expected in ARGS.items():
        for attr, value in expected:
            assert getattr(args, attr) == value, (option, attr, getattr(args, attr))
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    lora = lora_config(cfg, model)
    for option, expected in LORA.items():
        for attr, value in expected:
            assert getattr(lora, attr) == value, (option, attr, getattr(lora, attr))
    assert lora_config(TrainConfig(lora_target_modules="all-linear"), model).target_modules == "all-linear"
    with pytest.raises(TrainError, match="c_attn is not a linear layer.*q_proj"):
        lora_config(TrainConfig(lora_target_modules=["q_proj", "c_attn"]), model)


def test_evaluation_defaults_to_the_save_schedule_not_the_logging_steps(tmp_path):
    args = training_arguments(TrainConfig(), output_dir=str(tmp_path), dtype="fp32", has_validation=True,
                              cuda=False)
    assert args.eval_steps == args.save_steps == 200 and args.logging_steps == 10
    assert args.report_to == [] and args.save_total_limit == 3
    none = training_arguments(TrainConfig(), output_dir=str(tmp_path), dtype="fp32", has_validation=False,
                              cuda=False)
    assert none.eval_strategy == "no"


@pytest.mark.parametrize("steps, expected", [(21, 1), (100, 3), (1000, 30)])
def test_warmup_is_sized_to_the_run(tmp_path, steps, expected):
    """alpaca-lora's fixed 100 warm-up steps would be all of a 21-step run; 3% of it is 1 step."""
    args = training_arguments(TrainConfig(), output_dir=str(tmp_path), dtype="fp32", has_validation=False,
                              cuda=False)
    assert args.get_warmup_steps(steps) == expected
    fixed = training_arguments(TrainConfig(warmup_steps=5), output_dir=str(tmp_path), dtype="fp32",
                               has_validation=False, cuda=False)
    assert fixed.get_warmup_steps(steps) == 5


@pytest.mark.parametrize("changes, message", [
    ({"batch_size": 10, "micro_batch_size": 4}, "multiple of micro_batch_size"),
    ({"load_best_model_at_end": True, "eval_steps": 30, "save_steps": 200}, "multiple of eval_steps"),
    ({"warmup_ratio": 1.5}, "warmup_ratio"),
    ({"finetune": "full", "merge": True}, "already saves the whole model"),
    ({"finetune": "qlora"}, "finetune must be one of"),
])
def test_settings_that_cannot_work_together(changes, message):
    with pytest.raises(TrainError, match=message):
        check_config(TrainConfig(**changes), has_validation=True)
    with pytest.raises(TrainError, match="needs a validation split"):
        check_config(TrainConfig(load_best_model_at_end=True), has_validation=False)


def test_report_to_needs_its_package():
    import importlib.util

    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        pytest.skip("tensorboard is installed here")
    with pytest.raises(TrainError, match="pip install tensorboard"):
        check_config(TrainConfig(report_to="tensorboard"), has_validation=True)


def test_cli_flags_are_generated_from_the_config():
    from click.testing import CliRunner

    from datakit.cli import cli

    text = " ".join(CliRunner().invoke(cli, ["train", "--help"], terminal_width=400).output.split())
    for f in dataclasses.fields(TrainConfig):
        flag = "--model" if f.name == "base_model" else "--" + f.name.replace("_", "-")
        assert flag in text, flag
    assert "[default: 128]" in text and "[default: q_proj,k_proj,v_proj,o_proj]" in text
    assert "[default: 0.03]" in text and "--use-dora / --no-use-dora" in text
