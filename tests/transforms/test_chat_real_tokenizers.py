"""Chat rows on tokenizer files as their makers ship them, against the makers' own chat encoders.

- Mistral: mistral-common's SentencePiece ``mistral_instruct_tokenizer_240323.model.v3`` and its
  ``tekken_240911.json``. The reference is mistral-common's ``encode_chat_completion`` in
  finetuning mode (the ids), and the tokens of each assistant message as its
  ``encode_assistant_message`` gives them, the text and ``</s>`` (what mistral-finetune trains).
- Llama 3: the tiktoken ``tokenizer.model`` that llama-models ships, converted by transformers'
  ``TikTokenConverter``. The reference is llama-models' ``ChatFormat.encode_message`` (header,
  text, ``<|eot_id|>``); what follows the assistant header is trained.

datakit renders each conversation with a Jinja template that prints what those encoders encode,
tokenizes the render, and locates the turns itself. Answers start with a digit, CJK, an emoji
and a newline: SentencePiece then starts the answer with a bare dummy-prefix ``▁``, which the
model must emit first, so it must be supervised.
"""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from datakit.recipe import TokenizeOptions
from datakit.tokenization import load_tokenizer
from datakit.transforms.template import ChatStep
from datakit.transforms.tokenize_sft import TokenizeSFT

mistral_common = pytest.importorskip("mistral_common")
llama_models = pytest.importorskip("llama_models")
IGNORE = -100
MISTRAL_DATA = Path(mistral_common.__file__).parent / "data"

# mistral-common's v3 instruct format: [INST] each user text [/INST], each answer without its
# trailing spaces then </s>; the system prompt opens the last user message, followed by a blank line
MISTRAL_V3 = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set system = '' %}{%- set loop_messages = messages %}"
    "{%- endif %}{%- set ns = namespace(last=-1) %}"
    "{%- for m in loop_messages %}{%- if m['role'] == 'user' %}{%- set ns.last = loop.index0 %}{%- endif %}"
    "{%- endfor %}{{- bos_token }}"
    "{%- for m in loop_messages %}{%- if m['role'] == 'user' %}"
    "{%- if loop.index0 == ns.last and system %}{{- '[INST]' + system + '\\n\\n' + m['content'] + '[/INST]' }}"
    "{%- else %}{{- '[INST]' + m['content'] + '[/INST]' }}{%- endif %}"
    "{%- else %}{{- m['content'].rstrip(' ') + eos_token }}{%- endif %}{%- endfor %}")
# llama-models' ChatFormat: a header per message, its text as it is, <|eot_id|>
LLAMA3 = ("{{- bos_token }}{%- for m in messages %}"
          "{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] + '<|eot_id|>' }}"
          "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
          "{%- endif %}")

SYSTEM = {"role": "system", "content": "Answer briefly. 简短回答。"}
CONVERSATIONS = [
    [SYSTEM, {"role": "user", "content": "How many legs has a spider?"}, {"role": "assistant", "content": "8 legs."},
     {"role": "user", "content": "And an ant?"}, {"role": "assistant", "content": "6, like every insect."}],
    [{"role": "user", "content": "Say hello in Chinese."}, {"role": "assistant", "content": "你好！"},
     {"role": "user", "content": "日本語では？"}, {"role": "assistant", "content": "こんにちは"}],
    [{"role": "user", "content": "Your mood?"}, {"role": "assistant", "content": "😀 great, thanks."}],
    [SYSTEM, {"role": "user", "content": "A poem in two lines."},
     {"role": "assistant", "content": "\nRoses are red,\nviolets are blue."}],
    [{"role": "user", "content": "Year of the moon landing?"}, {"role": "assistant", "content": "1969"},
     {"role": "user", "content": "And the first flight?"}, {"role": "assistant", "content": "\n1903, by the Wrights.  "},
     {"role": "user", "content": "Thanks 🙏"}, {"role": "assistant", "content": "🙂"}],
]


def datakit_rows(tokenizer: str, template: str, convs: list[list[dict]]):
    tok = load_tokenizer(tokenizer)
    step = ChatStep(template, tokenizer=tok, origin="test")
    batch = pa.RecordBatch.from_arrays(
        [pa.array(convs), pa.array([f"c.jsonl:{i + 1}" for i in range(len(convs))]),
         pa.array([0] * len(convs), pa.int32()), pa.array(range(len(convs)), pa.int64())],
        names=["messages", "_where", "_source", "_group"])
    tokenize = TokenizeSFT(TokenizeOptions(), tokenizer=tok, chat=True)
    out = tokenize(step(batch)[0])[0]
    return out.column("input_ids").to_pylist(), out.column("labels").to_pylist(), tokenize.stats


def mistral_reference(path: Path, conv: list[dict]) -> tuple[list[int], list[int]]:
    from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.protocol.instruct.validator import ValidationMode
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    mt = MistralTokenizer.from_file(str(path), mode=ValidationMode.finetuning)
    kinds = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}
    messages = [kinds[m["role"]](content=m["content"]) for m in conv]
    ids = mt.encode_chat_completion(ChatCompletionRequest(messages=messages)).tokens
    instruct = mt.instruct_tokenizer
    end_inst = instruct.tokenizer.get_special_token("[/INST]")
    labels, at = [IGNORE] * len(ids), 0
    for m in messages:
        if not isinstance(m, AssistantMessage):
            continue
        turn = instruct.encode_assistant_message(m, is_before_last_user_message=False)
        # the turn follows an [/INST]: the first place after the previous turn where it does
        at = next(p for p in range(at, len(ids) - len(turn) + 1)
                  if ids[p - 1] == end_inst and ids[p:p + len(turn)] == turn)
        labels[at:at + len(turn)] = turn
        at += len(turn)
    return ids, labels


@pytest.mark.parametrize("name", ["mistral_instruct_tokenizer_240323.model.v3", "tekken_240911.json"])
def test_mistral_files_give_mistral_commons_finetuning_ids_and_labels(name):
    path = MISTRAL_DATA / name
    ids, labels, stats = datakit_rows(str(path), MISTRAL_V3, CONVERSATIONS)
    assert "rows_inference_mismatch" not in stats
    for k, conv in enumerate(CONVERSATIONS):
        ref_ids, ref_labels = mistral_reference(path, conv)
        assert ids[k] == ref_ids, f"{name} conversation {k}: ids"
        assert labels[k] == ref_labels, f"{name} conversation {k}: labels"


def test_the_dummy_prefix_before_an_answer_is_trained():
    """SentencePiece gives an answer that starts with a digit, CJK, an emoji or a newline a bare
    ``▁`` of its own; it is the first token of the answer, supervised."""
    import sentencepiece

    path = MISTRAL_DATA / "mistral_instruct_tokenizer_240323.model.v3"
    sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
    ids, labels, _ = datakit_rows(str(path), MISTRAL_V3, CONVERSATIONS)
    bare = sp.piece_to_id("[/INST]"), sp.piece_to_id("▁")
    answers_after_bare = sum(1 for row in ids for a, b in zip(row, row[1:]) if (a, b) == bare)
    assert answers_after_bare == 9  # every answer here: all 9 start with a digit, CJK, an emoji or a newline
    for row, lab in zip(ids, labels):
        for p in range(1, len(row)):
            if (row[p - 1], row[p]) == bare:
                assert lab[p] == row[p]


@pytest.fixture(scope="module")
def llama3_folder(tmp_path_factory) -> Path:
    """llama-models' tiktoken file, converted by transformers' converter into an HF folder."""
    from llama_models.llama3.tokenizer import Tokenizer
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ref = Tokenizer.get_instance()
    specials = [t for t, _ in sorted(ref.special_tokens.items(), key=lambda kv: kv[1])]
    path = Path(llama_models.__file__).parent / "llama3" / "tokenizer.model"
    cache = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""  # tiktoken would keep a copy of the file in the system's temp folder
    try:
        backend = TikTokenConverter(vocab_file=str(path), pattern=ref.pat_str,
                                    extra_special_tokens=specials).converted()
    finally:
        os.environ.pop("TIKTOKEN_CACHE_DIR") if cache is None else os.environ.__setitem__("TIKTOKEN_CACHE_DIR", cache)
    out = tmp_path_factory.mktemp("llama3")
    PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin_of_text|>",
                            eos_token="<|eot_id|>").save_pretrained(str(out))
    return out


def llama3_reference(conv: list[dict]) -> tuple[list[int], list[int]]:
    from llama_models.datatypes import RawMessage, StopReason
    from llama_models.llama3.chat_format import ChatFormat
    from llama_models.llama3.tokenizer import Tokenizer

    tok = Tokenizer.get_instance()
    chat = ChatFormat(tok)
    ids, labels = [tok.special_tokens["<|begin_of_text|>"]], [IGNORE]
    for m in conv:
        message = RawMessage(role=m["role"], content=m["content"], stop_reason=StopReason.end_of_turn)
        tokens, _ = chat.encode_message(message, tool_prompt_format=None)
        header = len(chat._encode_header(m["role"]))
        ids += tokens
        labels += [IGNORE] * header + (tokens[header:] if m["role"] == "assistant" else [IGNORE] * (len(tokens) - header))
    return ids, labels


def test_llama3_tiktoken_file_gives_llama_models_chat_ids_and_labels(llama3_folder):
    """Equal to ChatFormat, except where an answer starts with a newline: the render then holds
    the header's blank line and the answer's newline side by side, which the tokenizer spells
    as one token '\\n\\n\\n' (ChatFormat encodes the header and the text apart: '\\n\\n', '\\n').
    That token straddles the turn's start, so it is trained, and where it starts the last turn
    the row is counted as an inference mismatch (inference feeds the header's '\\n\\n')."""
    from llama_models.llama3.tokenizer import Tokenizer

    tok = Tokenizer.get_instance()
    blank, newline, joined = (tok.encode(t, bos=False, eos=False) for t in ("\n\n", "\n", "\n\n\n"))
    assert (len(blank), len(newline), len(joined)) == (1, 1, 1)
    ids, labels, stats = datakit_rows(str(llama3_folder), LLAMA3, CONVERSATIONS)
    for k, conv in enumerate(CONVERSATIONS):
        ref_ids, ref_labels = llama3_reference(conv)
        for p in reversed(range(len(ref_ids) - 1)):
            if ref_ids[p:p + 2] == blank + newline and ref_labels[p + 1] != IGNORE:
                ref_ids[p:p + 2], ref_labels[p:p + 2] = joined, joined
        assert ids[k] == ref_ids, f"llama 3 conversation {k}: ids"
        assert labels[k] == ref_labels, f"llama 3 conversation {k}: labels"
    assert stats["rows_inference_mismatch"] == 1 and stats["inference_mismatch.c.jsonl:4"] == 1
