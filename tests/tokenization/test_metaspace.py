"""Metaspace applied in Python (tokenization/metaspace.py) gives the backend's own ids, and is used
only where it can: compared with ``tokenizers`` itself on random texts."""
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer

from datakit.tokenization import load_tokenizer
from datakit.tokenization.metaspace import PreSpaced

from .conftest import ADDED, with_added

PIECES = ["the", " the", " model", "s", ".", " ", "  ", "   ", "\n", "\n\n", "▁", "▁▁", " ▁x", "中", "文", "😀",
          "é", "\t", "12", " 345", "a", " b", " a b", "<s>", "</s>", "<unk>", *ADDED, " <|im_end|>", "<|im_start|> "]
TEXTS = st.lists(st.sampled_from(PIECES), min_size=0, max_size=40).map("".join)


@pytest.fixture(scope="module")
def mistral_v3_json(tmp_path_factory):
    """mistral-common's v3 SentencePiece model, converted by transformers (Metaspace, byte fallback)."""
    mistral_common = pytest.importorskip("mistral_common")
    from transformers import LlamaTokenizer

    src = tmp_path_factory.mktemp("mistral_src")
    shutil.copy(Path(mistral_common.__file__).parent / "data" / "mistral_instruct_tokenizer_240323.model.v3",
                src / "tokenizer.model")
    out = tmp_path_factory.mktemp("mistral_hf")
    LlamaTokenizer.from_pretrained(str(src)).save_pretrained(str(out))
    return out / "tokenizer.json"


@pytest.fixture(scope="module", params=["llama_style", "mistral_v3"])
def metaspace_json(request, llama_style_tokenizer):
    path = llama_style_tokenizer if request.param == "llama_style" else request.getfixturevalue("mistral_v3_json")
    pre = json.loads(path.read_text("utf-8"))["pre_tokenizer"]
    # transformers' conversion of a SentencePiece model: the form PreSpaced applies to
    assert pre["type"] == "Metaspace" and pre["prepend_scheme"] == "first" and pre["split"] is False
    return path


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXTS, min_size=1, max_size=8), post=st.booleans(), special=st.booleans(),
       ordinary=st.booleans())
def test_ids_equal_the_backends_own(metaspace_json, texts, post, special, ordinary):
    backend = with_added(metaspace_json, bos=post)
    backend.encode_special_tokens = ordinary  # special-token strings read as text (datakit's default)
    fast = PreSpaced.of(backend)
    assert fast is not None
    want = [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=special)]
    got = [e.ids for e in fast.encode_batch_fast(texts, add_special_tokens=special)]
    assert got == want


def _edited(path: Path, tmp_path: Path, edit) -> Tokenizer:
    data = json.loads(path.read_text("utf-8"))
    edit(data)
    out = tmp_path / "tokenizer.json"
    out.write_text(json.dumps(data), encoding="utf-8")
    return Tokenizer.from_file(str(out))


def _pre(**changes):
    return lambda d: d["pre_tokenizer"].update(changes)


@pytest.mark.parametrize("name, edit", [
    ("split into words", _pre(split=True)),
    ("prepend to every run of text", _pre(prepend_scheme="always")),
    ("a normalizer", lambda d: d.update(normalizer={"type": "NFKC"})),
    ("byte-level", lambda d: d.update(pre_tokenizer={"type": "ByteLevel", "add_prefix_space": False,
                                                     "trim_offsets": True, "use_regex": True})),
    ("truncation", lambda d: d.update(truncation={"direction": "Right", "max_length": 4, "strategy": "LongestFirst",
                                                  "stride": 0})),
])
def test_other_pipelines_keep_the_backend(llama_style_tokenizer, tmp_path, name, edit):
    assert PreSpaced.of(_edited(llama_style_tokenizer, tmp_path, edit)) is None, name


@pytest.mark.parametrize("token", [AddedToken("<x>", lstrip=True), AddedToken("<x>", rstrip=True),
                                   AddedToken("<x>", single_word=True), AddedToken("a b"), AddedToken("▁x")])
def test_added_tokens_that_see_white_space_keep_the_backend(llama_style_tokenizer, token):
    backend = Tokenizer.from_file(str(llama_style_tokenizer))
    backend.add_tokens([token])
    assert PreSpaced.of(backend) is None


def test_truncation_and_padding_in_the_file_are_not_applied(llama_style_tokenizer, tmp_path):
    """A tokenizer.json that truncates at 4 tokens (an inference setting) still gives whole rows,
    as transformers does unless a call asks for truncation."""
    data = json.loads(llama_style_tokenizer.read_text("utf-8"))
    data["truncation"] = {"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0}
    data["padding"] = {"strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": None,
                       "pad_id": 0, "pad_type_id": 0, "pad_token": "<unk>"}
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    text = "the model reads the data and the model writes the tokens"
    plain = Tokenizer.from_file(str(llama_style_tokenizer)).encode(text, add_special_tokens=False).ids
    assert len(plain) > 4
    tok = load_tokenizer(str(folder))
    enc = tok.encode([text], add_special_tokens=False)
    assert enc.ids.tolist() == plain
