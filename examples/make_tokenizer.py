"""Train the small example tokenizer in examples/tokenizer from the example data beside it.

usage: python examples/make_tokenizer.py [OUT_DIR]

A byte-level BPE (GPT-2 style) of 1,000 ids: 256 byte pieces, so any UTF-8 text (Chinese, emoji)
encodes without <unk>, plus ~740 merges learned from examples/data. It adds BOS like Llama,
has <|im_start|>/<|im_end|> for its ChatML chat template, and loads with AutoTokenizer.
Training is deterministic: the same data gives the same tokenizer.json.
"""
import json
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

HERE = Path(__file__).resolve().parent
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def texts():
    data = HERE / "data"
    yield (data / "corpus.txt").read_text("utf-8")
    for rec in json.loads((data / "alpaca_sample.json").read_text("utf-8")):
        yield "\n".join(rec.values())
    for line in (data / "chat_sample.jsonl").read_text("utf-8").splitlines():
        yield "\n".join(m["content"] for m in json.loads(line)["messages"])


def main(out: Path) -> None:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
              "pad_token": "<pad>", "unk_token": "<unk>", "model_max_length": 4096,
              "chat_template": CHAT_TEMPLATE}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"{out}: {tok.get_vocab_size()} ids")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "tokenizer")
