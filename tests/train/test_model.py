"""Finding and loading the base model: paths, hub ids, remote code, precision, QLoRA, vocabulary."""
from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch", reason="the [train] extra is not installed")
pytest.importorskip("peft")

from datakit.errors import TrainError  # noqa: E402
from datakit.train.model import (check_quantization, check_vocabulary, load_base, precision,  # noqa: E402
                                 quantization_config, resolve_model)
from datakit.train.options import TrainConfig  # noqa: E402


@pytest.mark.parametrize("name", ["./no/such/model", "/no/such/model", "~/no-such-model", "../llama", "models/llama-7b",
                                  "models/llama-7b/", "C:\\models\\llama", "a/b/c"])
def test_a_path_that_does_not_exist_fails_at_once(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()  # so models/llama-7b is a mistyped local path, not a hub id
    with pytest.raises(TrainError, match="does not exist"):
        resolve_model(name)


@pytest.mark.parametrize("name", ["gpt2", "meta-llama/Llama-2-7b-hf", "Qwen/Qwen2.5-0.5B", "org/model.v1_2"])
def test_hub_ids_go_to_the_hub(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    assert resolve_model(name) == name


def test_cli_with_a_mistyped_model_path_never_asks_the_hub(built, tmp_path, monkeypatch):
    from click.testing import CliRunner
    from transformers import AutoModelForCausalLM

    from datakit.cli import cli

    def hub(*args, **kwargs):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", hub)
    data, _ = built
    run = CliRunner().invoke(cli, ["train", "--data", str(data), "--model", str(tmp_path / "lama"), "--silent"])
    assert run.exit_code == 1 and run.output.strip().splitlines() == [f"Error: model {tmp_path / 'lama'} does not "
                                                                      f"exist (no such folder)"]


def test_remote_code_never_runs_unless_allowed(built, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    _, model = built
    evil = tmp_path / "evil-model"
    shutil.copytree(model, evil)
    marker = tmp_path / "ran"
    (evil / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    config = json.loads((evil / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (evil / "config.json").write_text(json.dumps(config))
    load_base(str(evil), TrainConfig(), dtype="fp32", quantize=None)
    assert not marker.exists()
    seen = []
    real = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs["trust_remote_code"])
        return real(cls, *args, **{**kwargs, "trust_remote_code": False})

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    for allowed in (False, True):
        load_base(str(evil), TrainConfig(trust_remote_code=allowed), dtype="fp32", quantize=None)
    assert seen == [False, True]


def test_precision():
    cpu, gpu, old_gpu = dict(cuda=False, bf16_ok=False), dict(cuda=True, bf16_ok=True), dict(cuda=True, bf16_ok=False)
    assert precision(TrainConfig(), **cpu) == "fp32"
    assert precision(TrainConfig(), **gpu) == "bf16" and precision(TrainConfig(), **old_gpu) == "fp16"
    assert precision(TrainConfig(bf16=False), **gpu) == "fp32" and precision(TrainConfig(bf16=True), **cpu) == "bf16"
    assert precision(TrainConfig(fp16=True), **gpu) == "fp16"
    for cfg, kind, message in [(TrainConfig(fp16=True), cpu, "needs a CUDA GPU"),
                               (TrainConfig(bf16=True), old_gpu, "does not support bfloat16"),
                               (TrainConfig(bf16=True, fp16=True), gpu, "choose one")]:
        with pytest.raises(TrainError, match=message):
            precision(cfg, **kind)


def test_qlora_is_configured_and_refused_on_the_cpu(built):
    from click.testing import CliRunner

    from datakit.cli import cli

    q = quantization_config(TrainConfig(load_in_4bit=True), "bf16")
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization_config(TrainConfig(load_in_4bit=True), "fp16").bnb_4bit_compute_dtype == torch.float16
    with pytest.raises(TrainError, match="does not go with finetune: full"):
        check_quantization(TrainConfig(load_in_4bit=True, finetune="full"), cuda=True)
    data, model = built
    run = CliRunner().invoke(cli, ["train", "--data", str(data), "--model", str(model), "--load-in-4bit", "--silent"])
    assert run.exit_code == 1 and len(run.output.strip().splitlines()) == 1
    assert "load_in_4bit (QLoRA) needs a CUDA GPU" in run.output


def test_a_build_from_another_tokenizer_is_refused(built, llama_hf_tokenizer, make_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    data, model = built
    manifest = json.loads((data / "manifest.json").read_text())
    other = make_llama(tmp_path / "other", 1000)
    shutil.copy(llama_hf_tokenizer / "tokenizer.json", other / "tokenizer.json")
    with pytest.raises(TrainError, match=r"gives '.+' id \d+, the model's tokenizer .* gives it id \d+"):
        check_vocabulary(manifest, AutoModelForCausalLM.from_pretrained(str(other)), data=data, model_name=str(other))
    same = make_llama(tmp_path / "same", 1000)
    shutil.copy(manifest["tokenizer"]["source"], same / "tokenizer.json")
    check_vocabulary(manifest, AutoModelForCausalLM.from_pretrained(str(same)), data=data, model_name=str(same))
