"""Tokenizer files as they ship, recognized by content; a folder's own code never runs unless allowed."""
import base64
import json
import shutil

import pytest

import datakit
from datakit.errors import TokenizerError
from datakit.tokenization import load_tokenizer

TEXTS = ["Hello world.", "中文文本 and 🙂", "  spaced\tout\n", ""]


@pytest.mark.parametrize("name", ["tokenizer.model.v1", "tokenizer.model.v3", "tokenizer.model.v7", "spm"])
def test_a_sentencepiece_model_is_recognized_by_content(spm_model, tmp_path, name):
    import sentencepiece as spm

    shutil.copy(spm_model, tmp_path / name)
    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    # the file, and (for mistral-common's names) the folder holding it
    for spec in (tmp_path / name, tmp_path) if name != "spm" else (tmp_path / name,):
        tok = load_tokenizer(str(spec))
        assert tok.kind == "sentencepiece"
        enc = tok.encode(TEXTS, add_special_tokens=False)
        assert [enc.row(i).tolist() for i in range(len(TEXTS))] == [sp.encode(t) for t in TEXTS]


@pytest.mark.parametrize("content, message", [
    (b"aGVsbG8= 0\nIHdvcmxk 1\nIQ== 2\n", "tiktoken BPE file is not supported"),
    (b'{"vocab": {"a": 0}}', "neither a tokenizer.json nor a tekken.json"),
    (b"GGUF\x03\x00\x00\x00", "GGUF file is not supported"),
    (b"\x00\x01not a model", "not a SentencePiece model"),
])
def test_other_files_are_one_line_naming_what_is_supported(tmp_path, content, message):
    f = tmp_path / "tokenizer.model"
    f.write_bytes(content)
    with pytest.raises(TokenizerError, match=message) as e:
        load_tokenizer(str(f))
    assert "\n" not in str(e.value)
    assert "tekken.json" in str(e.value) or "tiktoken" in str(e.value) or "GGUF" in str(e.value)


def _tekken(path):
    """A small tekken.json in mistral-common's layout: 256 byte tokens, a few merges, 100 special slots."""
    vocab = [bytes([i]) for i in range(256)] + [b"th", b"the", b" t", b" the", b"he", b"in", b" in", b"or", b" w"]
    pattern = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    data = {"config": {"pattern": pattern, "num_vocab_tokens": len(vocab), "default_vocab_size": len(vocab) + 100,
                       "default_num_special_tokens": 100, "version": "v3"},
            "vocab": [{"rank": i, "token_bytes": base64.b64encode(b).decode(), "token_str": None}
                      for i, b in enumerate(vocab)]}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_a_tekken_json_gives_mistral_commons_ids(tmp_path):
    pytest.importorskip("mistral_common")
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    path = _tekken(tmp_path / "tekken.json")
    ref = Tekkenizer.from_file(str(path))
    texts = ["the thin in the world", "中文 🙂 and  spaces\n\nnew"]
    for spec in (path, tmp_path):
        tok = load_tokenizer(str(spec))
        enc = tok.encode(texts, add_special_tokens=False)
        assert [enc.row(i).tolist() for i in range(len(texts))] == [ref.encode(t, bos=False, eos=False) for t in texts]
        assert (tok.bos_id, tok.eos_id) == (ref.bos_id, ref.eos_id)


def _evil_folder(tmp_path, hf_tokenizer, *, with_tokenizer_json: bool):
    folder = tmp_path / ("evil_json" if with_tokenizer_json else "evil")
    folder.mkdir()
    marker = tmp_path / "ran"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                    "from transformers import PreTrainedTokenizerFast as EvilTokenizer\n")
    config = json.loads((hf_tokenizer / "tokenizer_config.json").read_text("utf-8"))
    config["auto_map"] = {"AutoTokenizer": [None, "evil.EvilTokenizer"]}
    config["tokenizer_class"] = "EvilTokenizer"
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    if with_tokenizer_json:
        shutil.copy(hf_tokenizer / "tokenizer.json", folder / "tokenizer.json")
    else:  # only what AutoTokenizer reads: the vocabulary as vocab.json/merges.txt is enough to need the class
        data = json.loads((hf_tokenizer / "tokenizer.json").read_text("utf-8"))
        (folder / "vocab.json").write_text(json.dumps(data["model"]["vocab"]), encoding="utf-8")
        (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(
            m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]) + "\n", encoding="utf-8")
    return folder, marker


def test_a_tokenizer_folders_own_code_never_runs(hf_tokenizer, tmp_path, monkeypatch):
    folder, marker = _evil_folder(tmp_path, hf_tokenizer, with_tokenizer_json=True)
    assert load_tokenizer(str(folder)).vocab_size > 0  # the tokenizer.json is read; evil.py is not
    folder, marker = _evil_folder(tmp_path, hf_tokenizer, with_tokenizer_json=False)
    monkeypatch.setattr("builtins.input", lambda *a: "y")  # as `echo y | datakit build` answered the prompt
    with pytest.raises(TokenizerError, match="trust_remote_code") as e:
        load_tokenizer(str(folder))
    assert "\n" not in str(e.value)
    assert not marker.exists()


def test_a_recipe_allows_remote_code_only_when_it_says_so(hf_tokenizer, tmp_path, make_recipe, monkeypatch):
    folder, marker = _evil_folder(tmp_path, hf_tokenizer, with_tokenizer_json=False)
    src = tmp_path / "corpus.txt"
    src.write_text("some text\n", encoding="utf-8")
    recipe = {"tokenizer": str(folder), "sources": [{"path": str(src), "format": "text"}],
              "transforms": [{"tokenize": {}}, {"pack": {"block_size": 8}}], "split": {"val_set_size": 0},
              "output": str(tmp_path / "out")}
    with pytest.raises(TokenizerError, match="trust_remote_code"):
        datakit.run_build(make_recipe(recipe), silent=True)
    assert not marker.exists()
    seen = {}
    from transformers import AutoTokenizer

    def spy(name, **kwargs):
        seen.update(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", spy)
    with pytest.raises(TokenizerError):
        datakit.run_build(make_recipe(dict(recipe, trust_remote_code=True)), silent=True)
    assert seen == {"trust_remote_code": True}


def test_inspect_never_runs_the_code_of_the_tokenizer_a_manifest_names(hf_tokenizer, tmp_path, make_recipe,
                                                                       monkeypatch):
    from datakit.inspect import open_build

    folder = hf_tokenizer
    src = tmp_path / "corpus.txt"
    src.write_text("some text for the build\n", encoding="utf-8")
    recipe = {"tokenizer": str(folder), "sources": [{"path": str(src), "format": "text"}],
              "transforms": [{"tokenize": {}}, {"pack": {"block_size": 4, "remainder": "pad"}}],
              "split": {"val_set_size": 0}, "output": str(tmp_path / "out")}
    result = datakit.run_build(make_recipe(recipe), silent=True)
    evil, marker = _evil_folder(tmp_path, hf_tokenizer, with_tokenizer_json=False)
    manifest = json.loads((result.path / "manifest.json").read_text("utf-8"))
    manifest["tokenizer"]["source"] = str(evil)  # a manifest naming a folder that asks to run its own code
    (result.path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    monkeypatch.setattr("builtins.input", lambda *a: "y")
    build = open_build(result.path)
    assert build.tokenizer is None and "trust_remote_code" in build.tokenizer_error
    assert not marker.exists()


@pytest.mark.parametrize("key, value, message", [
    ("bos_token", 7, "bos_token in its config must be a string or"),
    ("eos_token", {"content": 5}, "eos_token in its config must be a string or"),
    ("pad_token", ["a"], "pad_token in its config must be a string or"),
    ("chat_template", 5, "chat_template in its config must be a string"),
])
def test_a_config_value_of_the_wrong_type_is_one_line(hf_tokenizer, tmp_path, key, value, message):
    folder = tmp_path / "tok"
    shutil.copytree(hf_tokenizer, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config[key] = value
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(TokenizerError, match=message):
        load_tokenizer(str(folder))
