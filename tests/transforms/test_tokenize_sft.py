"""Instruction tuning: masks against independent references (alpaca-lora's data path, decoded
assistant turns) and hypothesis invariants."""
import json


import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import datakit
from datakit.errors import SourceError, TemplateError

IGNORE = -100
ALPACA_TEMPLATE = {
    "prompt_input": "Below is an instruction that describes a task, paired with an input that provides further "
                    "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
                    "{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
    "prompt_no_input": "Below is an instruction that describes a task. Write a response that appropriately "
                       "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n",
}
RECORDS = [
    {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well, sleep, move."},
    {"instruction": "Translate.", "input": "Le chat dort.", "output": "The cat sleeps."},
    {"instruction": "把这句话翻译成英文。", "input": "今天天气很好。", "output": "The weather is nice today. 🙂"},
    {"instruction": "Spaces  and\ttabs", "input": "", "output": "  Leading spaces   and runs   kept."},
    {"instruction": "Write a long answer.", "input": "", "output": "word " * 120},
    {"instruction": "Long prompt " * 80, "input": "x", "output": "short"},
]


def build(make_recipe, tok, records, *, fmt="alpaca", template="alpaca", chat_template=None, name="data.json",
          **tokenize):
    src = make_recipe_dir(make_recipe) / name
    if name.endswith(".jsonl"):
        src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    else:
        src.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    recipe = {"tokenizer": str(tok), "sources": [{"path": str(src), "format": fmt}],
              "transforms": [{"template": template}, {"tokenize": tokenize}],
              "split": {"val_set_size": 0, "shuffle": False}, "output": "out"}
    if chat_template:
        recipe["chat_template"] = chat_template
    result = datakit.run_build(make_recipe(recipe), overwrite=True, silent=True)
    ds = datakit.load(result.path)["train"]
    return [list(x) for x in ds["input_ids"]], [list(x) for x in ds["labels"]], result.manifest


def make_recipe_dir(make_recipe):
    return make_recipe({"x": 1}, "probe.yaml").parent


def alpaca_lora(tok, rec, cutoff):
    """alpaca-lora's generate_and_tokenize_prompt, as in its finetune.py."""
    def prompt(instruction, inp=None, label=None):
        res = ALPACA_TEMPLATE["prompt_input"].format(instruction=instruction, input=inp) if inp else \
            ALPACA_TEMPLATE["prompt_no_input"].format(instruction=instruction)
        return f"{res}{label}" if label else res

    def tokenize(text):
        r = tok(text, truncation=True, max_length=cutoff, padding=False)
        ids = list(r["input_ids"])
        if ids[-1] != tok.eos_token_id and len(ids) < cutoff:
            ids.append(tok.eos_token_id)
        return ids

    full = tokenize(prompt(rec["instruction"], rec["input"], rec["output"]))
    n = len(tokenize(prompt(rec["instruction"], rec["input"]))) - 1
    return full, [IGNORE] * n + full[n:], n


@pytest.mark.parametrize("cutoff", [128, 512])
def test_alpaca_matches_alpaca_lora(make_recipe, hf_tokenizer, cutoff):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_tokenizer))
    ids, labels, manifest = build(make_recipe, hf_tokenizer, RECORDS, cutoff_len=cutoff)
    compared = 0
    rows = iter(zip(ids, labels))
    for rec in RECORDS:
        ref_ids, ref_labels, prompt_len = alpaca_lora(tok, rec, cutoff)
        if prompt_len >= cutoff - 1:
            continue  # the peer supervises nothing; datakit drops the row
        got = next(rows)
        assert got == (ref_ids, ref_labels), rec["instruction"][:30]
        compared += 1
    assert compared >= 4
    counts = manifest["counts"]
    assert counts["supervised_tokens"] == sum(l != IGNORE for row in labels for l in row)
    assert counts["prompt_tokens"] + counts["supervised_tokens"] == counts["tokens_written"]


def test_alpaca_with_sentencepiece_masks_exactly_the_response(make_recipe, spm_model):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    ids, labels, _ = build(make_recipe, spm_model, RECORDS[:4], cutoff_len=512)
    for rec, row, lab in zip(RECORDS, ids, labels):
        prompt = (ALPACA_TEMPLATE["prompt_input"].format(**rec) if rec["input"]
                  else ALPACA_TEMPLATE["prompt_no_input"].format(**rec))
        assert row == [sp.bos_id()] + sp.encode(prompt + rec["output"]) + [sp.eos_id()]
        supervised = [t for t, l in zip(row, lab) if l != IGNORE]
        assert supervised[-1] == sp.eos_id()
        assert sp.decode(supervised[:-1]).strip() == rec["output"].strip()


def test_truncated_rows_get_no_eos_and_overlong_drop(make_recipe, hf_tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_tokenizer))
    eos, cutoff = tok.eos_token_id, 128
    full = [alpaca_lora(tok, r, 10_000) for r in RECORDS]
    too_long = [len(ids) > cutoff for ids, _, _ in full]
    no_response = [n >= cutoff for _, _, n in full]
    ids, labels, m = build(make_recipe, hf_tokenizer, RECORDS, cutoff_len=cutoff)
    assert all(len(r) <= cutoff for r in ids)
    assert sum(len(r) == cutoff and r[-1] != eos for r in ids) == sum(too_long) - sum(no_response) >= 1
    assert m["counts"]["rows_truncated"] == sum(too_long)
    assert m["counts"]["rows_dropped"]["no_supervised_tokens"] == sum(no_response) >= 1
    ids2, _, m2 = build(make_recipe, hf_tokenizer, RECORDS, cutoff_len=cutoff, overlong="drop")
    assert all(r[-1] == eos for r in ids2)
    assert m2["counts"]["rows_dropped"]["overlong"] == sum(too_long) == len(RECORDS) - len(ids2)


def test_train_on_inputs_supervises_everything(make_recipe, hf_tokenizer):
    ids, labels, _ = build(make_recipe, hf_tokenizer, RECORDS[:3], cutoff_len=512, train_on_inputs=True)
    assert ids == labels


CONVERSATIONS = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"},
                  {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"},
                  {"role": "assistant", "content": "4, of course  "}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "value": "你好"}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "你好！🙂"}]}]},
]
INST_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
                 "{% elif m['role'] == 'assistant' %} {{ m['content'] }}</s>{% endif %}{% endfor %}")


# What the model generates after the prompt: with INST_TEMPLATE (no generation prompt) that is
# the space the template writes before the answer, too.
@pytest.mark.parametrize("template, lead, marker", [(None, "", "<|im_end|>"), (INST_TEMPLATE, " ", "</s>")])
@pytest.mark.parametrize("train_on", ["all_assistant", "last_assistant"])
def test_supervised_tokens_decode_to_the_assistant_turns(make_recipe, hf_tokenizer, template, lead, marker, train_on):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_tokenizer))
    ids, labels, _ = build(make_recipe, hf_tokenizer, CONVERSATIONS, fmt="messages", template="chat",
                           chat_template=template, name="c.jsonl", train_on=train_on)
    for conv, row, lab in zip(CONVERSATIONS, ids, labels):
        turns = [m["content"] if isinstance(m["content"], str) else m["content"][0].get("text", m["content"][0].get("value"))
                 for m in conv["messages"] if m["role"] == "assistant"]
        if train_on == "last_assistant":
            turns = turns[-1:]
        supervised = [t for t, l in zip(row, lab) if l != IGNORE]
        assert tok.decode(supervised) == "".join(lead + t + marker for t in turns)
        assert row[:2] != [tok.bos_token_id] * 2


def test_sharegpt_prompt_completion_and_column_maps(make_recipe, hf_tokenizer):
    share = [{"conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}]}]
    ids, labels, _ = build(make_recipe, hf_tokenizer, share, fmt="sharegpt", template="chat")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_tokenizer))
    assert tok.decode([t for t, l in zip(ids[0], labels[0]) if l != IGNORE]) == "A.<|im_end|>"
    pc = [{"prompt": "Say hi: ", "completion": "hi"}]
    ids, labels, _ = build(make_recipe, hf_tokenizer, pc, fmt="prompt_completion", template="alpaca_short")
    assert tok.decode([t for t, l in zip(ids[0], labels[0]) if l != IGNORE]) == "hi</s>"


@pytest.mark.parametrize("records, fmt, message", [
    ([{"instruction": "x", "input": ""}], "alpaca", "data.json: row 0: field 'output': missing"),
    ([{"instruction": "x", "output": 3}], "alpaca", "row 0: field 'output': must be a string, got int"),
    ([{"messages": [{"role": "robot", "content": "x"}]}], "messages", "field 'messages[0].role': unknown role"),
    ([{"messages": [{"role": "user", "content": "x"}]}], "messages", "has no assistant turn"),
    ([{"conversations": [{"from": "gpt", "value": {"a": 1}}]}], "sharegpt", "field 'conversations[0].value'"),
])
def test_malformed_rows_name_file_row_and_field(make_recipe, hf_tokenizer, records, fmt, message):
    with pytest.raises(SourceError, match=message.replace("[", r"\[").replace("]", r"\]").replace("?", r"\?")):
        build(make_recipe, hf_tokenizer, records, fmt=fmt, template="chat" if fmt != "alpaca" else "alpaca")


def test_double_bos_is_an_error_naming_the_row(make_recipe, hf_tokenizer):
    with pytest.raises(TemplateError, match=r"c.jsonl:1: mask check failed: the row starts with two BOS"):
        build(make_recipe, hf_tokenizer, CONVERSATIONS, fmt="messages", template="chat", name="c.jsonl",
              add_special_tokens=True)


def test_template_from_a_file_and_bad_templates(make_recipe, hf_tokenizer, tmp_path):
    good = tmp_path / "mine.json"
    good.write_text(json.dumps({"prompt_input": "I: {instruction} / {input}\nA: ", "prompt_no_input": "I: {instruction}\nA: "}))
    ids, labels, _ = build(make_recipe, hf_tokenizer, RECORDS[:2], template=str(good))
    assert len(ids) == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"prompt_input": "{instruction}", "prompt_no_input": "{instruction}"}))
    with pytest.raises(TemplateError, match="field 'prompt_input' lacks the placeholder {input}"):
        build(make_recipe, hf_tokenizer, RECORDS[:2], template=str(bad))


def test_a_chat_template_cannot_run_code(make_recipe, hf_tokenizer):
    evil = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(TemplateError, match="SecurityError|unsafe|not safely"):
        build(make_recipe, hf_tokenizer, CONVERSATIONS, fmt="messages", template="chat", chat_template=evil,
              name="c.jsonl")


words = st.sampled_from(["the", "cat", " ", "  ", "\n", "é", "中文", "🙂", "###", "Response", ":", "a", "zz", "\t",
                         "42"])
text = st.lists(words, min_size=0, max_size=12).map("".join)


def _sft_batch(prompts, outputs):
    import pyarrow as pa

    texts = [p + o for p, o in zip(prompts, outputs)]
    return pa.RecordBatch.from_pydict({
        "text": texts, "span_starts": [[len(p)] for p in prompts], "span_ends": [[len(t)] for t in texts],
        "_where": [str(i) for i in range(len(texts))], "_source": pa.array([0] * len(texts), pa.int32()),
        "_group": pa.array(range(len(texts)), pa.int64())})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(text, st.sampled_from(["\n", " ", ":"]), text), min_size=1, max_size=6),
       cutoff=st.integers(8, 80), tokenizer=st.sampled_from(["hf", "spm"]))
@example(rows=[("", " ", "the cat")], cutoff=60, tokenizer="hf")  # Ġthe straddles the output's start
@example(rows=[("", "\n", "the cat")], cutoff=60, tokenizer="spm")  # ▁the: the newline is read as a space
def test_mask_invariants(hf_tokenizer, spm_model, rows, cutoff, tokenizer):
    """Each row's supervised bytes are its own output (truncated at cutoff_len), preceded at most
    by the rest of one token that straddles the output's start; never empty when the output is not."""
    from datakit.recipe import TokenizeOptions
    from datakit.tokenization import load_tokenizer
    from datakit.transforms.tokenize_sft import TokenizeSFT

    tok = load_tokenizer(str(hf_tokenizer if tokenizer == "hf" else spm_model))
    prompts = [f"### Instruction:\n{a}\n\n### Response:{sep}" for a, sep, _ in rows]
    outputs = [o for _, _, o in rows]
    step = TokenizeSFT(TokenizeOptions(cutoff_len=cutoff), tokenizer=tok)
    out = step(_sft_batch(prompts, outputs))
    surfaces = tok.surfaces()
    # the fixture's SentencePiece model normalizes (nmt_nfkc): tab and newline are read as spaces
    norm = (lambda t: t.replace("\n", " ").replace("\t", " ")) if tokenizer == "spm" else (lambda t: t)

    def spelled(ids):
        return b"".join(surfaces.flat[surfaces.starts[i]:surfaces.starts[i] + surfaces.lengths[i]].tobytes()
                        for i in ids)

    for batch in out:
        for ids, labels, where in zip(batch.column("input_ids").to_pylist(), batch.column("labels").to_pylist(),
                                      batch.column("_where").to_pylist()):
            i = int(where)
            assert len(ids) == len(labels) <= cutoff
            assert all(lab == IGNORE or lab == t for t, lab in zip(ids, labels))
            marked = [k for k, lab in enumerate(labels) if lab != IGNORE]
            assert marked == list(range(marked[0], marked[-1] + 1))  # one run: the output (+ EOS)
            sup = [ids[k] for k in marked]
            if sup[-1] == tok.eos_id:
                sup = sup[:-1]
            got, prompt, output = spelled(sup), norm(prompts[i]).encode(), norm(outputs[i]).encode()
            if output:
                assert got, "the output's tokens are not supervised"
            first = len(spelled(sup[:1]))
            # the first token may hold the end of the prompt; the rest is the output's start
            lead = next(k for k in range(first + 1) if got[k:] == output[:len(got) - k])
            assert prompt.endswith(got[:lead])
            if len(ids) < cutoff:  # not truncated: the whole output
                assert got[lead:] == output
