"""Shared fixtures: tokenizers trained here from the example text (no network), and helpers."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _example_texts() -> list[str]:
    spec = importlib.util.spec_from_file_location("make_tokenizer", EXAMPLES / "make_tokenizer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return list(mod.texts())


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    """Every test builds with its own empty tokenized-rows cache, never the user's."""
    monkeypatch.setenv("DATAKIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def hf_tokenizer(tmp_path_factory) -> Path:
    """A byte-level BPE folder (tokenizer.json + tokenizer_config.json with a ChatML template)."""
    spec = importlib.util.spec_from_file_location("make_tokenizer", EXAMPLES / "make_tokenizer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path_factory.mktemp("hf_tok")
    mod.main(out)
    return out


@pytest.fixture(scope="session")
def spm_model(tmp_path_factory) -> Path:
    """A small SentencePiece BPE model with byte fallback, like Llama's (BOS=1, EOS=2)."""
    import sentencepiece as spm

    out = tmp_path_factory.mktemp("spm")
    corpus = out / "corpus.txt"
    corpus.write_text("\n".join(t.replace("\n", " ") for t in _example_texts()), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out / "tok"), vocab_size=400, model_type="bpe",
        byte_fallback=True, character_coverage=0.9995, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, minloglevel=2, remove_extra_whitespaces=False)
    return out / "tok.model"


@pytest.fixture(scope="session")
def llama_hf_tokenizer(spm_model, tmp_path_factory) -> Path:
    """``spm_model`` converted by transformers into a Hugging Face folder, the way Llama's
    tokenizer.json is made: Metaspace pieces, BPE merges, byte fallback, BOS added."""
    import shutil

    from transformers import LlamaTokenizer

    src = tmp_path_factory.mktemp("llama_src")
    shutil.copy(spm_model, src / "tokenizer.model")
    out = tmp_path_factory.mktemp("llama_hf")
    LlamaTokenizer.from_pretrained(str(src)).save_pretrained(str(out))
    (out / "tokenizer.model").unlink(missing_ok=True)  # load the tokenizer.json, not the .model
    return out


@pytest.fixture
def write_jsonl(tmp_path):
    def write(name: str, records: list, *, raw_lines: list[str] | None = None) -> Path:
        p = tmp_path / name
        lines = [json.dumps(r, ensure_ascii=False) for r in records] + list(raw_lines or [])
        p.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return p
    return write


@pytest.fixture
def make_recipe(tmp_path):
    """Write a recipe YAML in tmp_path from a dict and return its path."""
    import yaml

    def make(data: dict, name: str = "recipe.yaml") -> Path:
        p = tmp_path / name
        p.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
        return p
    return make


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size="256k", ro=False)`` mounts a small tmpfs and returns its folder (unmounted at
    the end). Full-disk and read-only cases need a real filesystem that says ENOSPC or EROFS;
    only root can mount one, so elsewhere these tests skip."""
    import os
    import subprocess

    mounted = []

    def mount(size: str = "256k", *, ro: bool = False) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs (full disk, read-only) needs root")
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        opts = f"size={size}" + (",ro" if ro else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)
