"""One step object runs the same in the local executor and inside datasets.map (arrow format)."""
import pyarrow as pa

from datakit.executor import run_chain, table_fn
from datakit.recipe import PackOptions, TokenizeOptions
from datakit.tokenization import load_tokenizer
from datakit.transforms import Pack, TokenizeText

DOCS = [f"Document {i}: " + "words and more words " * (i % 5 + 1) for i in range(23)]


def _batches(size):
    for start in range(0, len(DOCS), size):
        part = DOCS[start:start + size]
        yield pa.RecordBatch.from_pydict({"text": part, "_where": [f"d:{start + k}" for k in range(len(part))]})


def test_the_same_steps_inside_datasets_map(hf_tokenizer):
    from datasets import Dataset

    tok = load_tokenizer(str(hf_tokenizer))
    eos = tok.eos_id

    def steps():
        return [TokenizeText(TokenizeOptions(), tokenizer=tok), Pack(PackOptions(block_size=16), eos_id=eos)]

    local = [r for b in run_chain(_batches(5), steps()) for r in b.column("input_ids").to_pylist()]
    tokenize, pack = steps()
    ds = Dataset.from_dict({"text": DOCS, "_where": [f"d:{i}" for i in range(len(DOCS))]}).with_format("arrow")
    mapped = ds.map(table_fn(tokenize), batched=True, batch_size=7, remove_columns=["text", "_where"])
    packed = mapped.map(table_fn(pack), batched=True, batch_size=4, remove_columns=mapped.column_names)
    rows = [list(r) for r in packed.with_format(None)["input_ids"]]
    assert rows == local  # the remainder (dropped) is still inside `pack`; flush() would hand it over
    stream = [t for d in DOCS for t in tok.encode([d]).ids.tolist() + [eos]]
    assert [t for r in rows for t in r] == stream[:len(rows) * 16]
