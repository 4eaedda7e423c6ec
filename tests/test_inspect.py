"""`datakit inspect` on small builds: the trained/masked distinction on exact tokens."""
import json
import re
from itertools import accumulate

import pytest
from click.testing import CliRunner

from datakit.cli import cli

IGNORE = -100
ALPACA = [
    {"instruction": "Name the capital of Japan.", "input": "", "output": "Tokyo is the capital."},
    {"instruction": "Translate.", "input": "Le chat dort.", "output": "The cat sleeps."},
    {"instruction": "Say hello", "input": "", "output": "Hello there!"},
]
CHINESE = [
    {"instruction": "把这句话翻译成英文。", "input": "今天天气很好。", "output": "今天的天气很好，阳光明媚。"},
    {"instruction": "用一句话解释数据去重。", "input": "", "output": "去掉重复的样本。"},
    {"instruction": "写一个词", "input": "", "output": "龘龘"},  # rare: byte-fallback pieces
]


def _build(tmp_path, make_recipe, tok, records, name):
    src = tmp_path / f"{name}.json"
    src.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    r = {"tokenizer": str(tok), "sources": [{"path": str(src), "format": "alpaca"}],
         "transforms": [{"template": "alpaca_short"}, {"tokenize": {"cutoff_len": 512}}],
         "split": {"val_set_size": 1, "seed": 1}, "output": str(tmp_path / name)}
    result = CliRunner().invoke(cli, ["build", str(make_recipe(r, f"{name}.yaml")), "--silent"])
    assert result.exit_code == 0, result.output
    return tmp_path / name


@pytest.fixture
def builds(tmp_path, make_recipe, hf_tokenizer, spm_model):
    return {"en": (_build(tmp_path, make_recipe, hf_tokenizer, ALPACA, "en"), hf_tokenizer),
            "zh": (_build(tmp_path, make_recipe, spm_model, CHINESE, "zh"), spm_model)}


def _rows(path, split):
    from datasets import load_from_disk

    ds = load_from_disk(str(path))[split]
    return [list(x) for x in ds["input_ids"]], [list(x) for x in ds["labels"]]


def _decode(tok_path, ids):
    if str(tok_path).endswith(".model"):
        import sentencepiece as spm

        return spm.SentencePieceProcessor(model_file=str(tok_path)).decode(ids)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tok_path)).decode(ids)


def _plain_to_text(segment: str) -> str:
    segment = re.sub("[₀-₉]+", "", segment)
    return segment.replace("|", "").replace("↵\n", "\n").replace("→", "\t")


@pytest.mark.parametrize("which", ["en", "zh"])
def test_row_view_marks_exactly_the_trained_tokens(builds, which):
    path, tok = builds[which]
    ids, labels = _rows(path, "train")
    for i in range(len(ids)):
        out = CliRunner().invoke(cli, ["inspect", str(path), "--row", str(i), "--no-color"])
        assert out.exit_code == 0, out.output
        body = out.output.split("\n", 1)[1]
        trained = re.findall("«(.*?)»", body, flags=re.S)
        assert len(trained) == 1  # one response per alpaca row
        sup = [t for t, l in zip(ids[i], labels[i]) if l != IGNORE]
        eos_text = "</s>"
        assert _plain_to_text(trained[0]) == _decode(tok, sup[:-1]).lstrip(" ") + eos_text or \
            _plain_to_text(trained[0]).lstrip(" ") == _decode(tok, sup[:-1]).lstrip(" ") + eos_text
        masked = _plain_to_text(body.split("«")[0])
        assert "### Response:" in masked and "### Instruction:" in masked


def test_color_view_styles_trained_and_masked_tokens(builds):
    from datakit import inspect as view

    path, _ = builds["en"]
    b = view.open_build(path)
    ids, labels = _rows(path, "train")
    text = view.row_text(b, "train", 0, color=True)
    body = text.split("\n", 1)[1]
    segments = [s for s in body.split("\x1b[90m│\x1b[0m") if s]
    assert len(segments) == len(b.pieces(b.row("train", 0)))
    trained = [s for s in segments if s.startswith("\x1b[32m") or s.startswith("\x1b[35m\x1b[1m")]
    n_sup = sum(l != IGNORE for l in labels[0])
    assert len(trained) == n_sup  # ASCII text: one piece per token
    assert all("\x1b[2m" in s for s in segments if s not in trained)


def test_table_lists_every_token_with_its_label(builds):
    path, _ = builds["zh"]
    ids, labels = _rows(path, "validation")
    out = CliRunner().invoke(cli, ["inspect", str(path), "--row", "0", "--split", "validation", "--table"])
    assert out.exit_code == 0, out.output
    lines = out.output.strip().splitlines()[1:]
    assert len(lines) == len(ids[0])
    for line, tid, lab in zip(lines, ids[0], labels[0]):
        pos, tok_id, label = line.split()[:3]
        assert (int(tok_id), int(label)) == (tid, lab)


def test_byte_fallback_pieces_read_as_characters_and_keep_their_ids(builds):
    path, tok = builds["zh"]
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tok))
    split, row = next((split, i) for split in ("train", "validation")
                      for i, r in enumerate(_rows(path, split)[0]) if "龘" in sp.decode(r))
    assert any(sp.id_to_piece(t).startswith("<0x") for t in _rows(path, split)[0][row])
    args = ["inspect", str(path), "--row", str(row), "--split", split]
    plain = CliRunner().invoke(cli, args + ["--no-color"]).output
    assert "龘" in plain and "<0x" not in plain  # whole characters, with a token count
    assert re.search("龘[₂-₉]", plain)
    table = CliRunner().invoke(cli, args + ["--table"]).output
    # every byte token of 龘 is listed with its own id and raw piece, and says which part it is
    rows = [l for l in table.splitlines() if "'龘'" in l]
    assert len(rows) >= 4 and all("<0x" in l and "(token" in l for l in rows)
    assert all(re.search(r"'#'$", l) for l in table.splitlines() if "<0x23>" in l)


def test_summary_sample_grep_and_html(builds, tmp_path):
    path, _ = builds["en"]
    ids, labels = _rows(path, "train")
    out = CliRunner().invoke(cli, ["inspect", str(path)]).output
    sup = sum(l != IGNORE for row in labels for l in row)
    assert f"[train] rows {len(ids)}" in out and f"supervised {sup}" in out
    assert "rows dropped: none" in out and "tokenizer:" in out and "p50" in out
    a = CliRunner().invoke(cli, ["inspect", str(path), "--sample", "1", "--seed", "3", "--no-color"]).output
    assert a == CliRunner().invoke(cli, ["inspect", str(path), "--sample", "1", "--seed", "3", "--no-color"]).output
    hits = CliRunner().invoke(cli, ["inspect", str(path), "--split", "train", "--grep", "Tokyo", "--no-color"]).output
    expected = [i for i, r in enumerate(ids) if "Tokyo" in _decode(builds["en"][1], r)]
    assert re.findall(r"\[train row (\d+)\]", hits) == [str(i) for i in expected]
    page = tmp_path / "r.html"
    result = CliRunner().invoke(cli, ["inspect", str(path), "--sample", "2", "--html", str(page)])
    assert result.exit_code == 0, result.output
    doc = page.read_text()
    assert doc.startswith("<!doctype html>") and "<svg" in doc and 'class="t trained"' in doc
    for external in ("http://", "https://", "<script", "<link", "src=", "@import", "url("):
        assert external not in doc


def test_out_of_range_row_and_not_a_build(builds, tmp_path):
    path, _ = builds["en"]
    out = CliRunner().invoke(cli, ["inspect", str(path), "--row", "99"])
    assert out.exit_code == 1 and "out of range" in out.output
    out = CliRunner().invoke(cli, ["inspect", str(tmp_path)])
    assert out.exit_code == 1 and "not a datakit build" in out.output


def test_packed_rows_show_their_boundaries_and_the_packing(tmp_path, make_recipe, hf_tokenizer):
    from datasets import load_from_disk

    src = tmp_path / "p.json"
    src.write_text(json.dumps(ALPACA * 4), encoding="utf-8")
    r = {"tokenizer": str(hf_tokenizer), "sources": [{"path": str(src), "format": "alpaca"}],
         "transforms": [{"template": "alpaca_short"}, {"tokenize": {}}, {"pack": {"block_size": 128}}],
         "split": {"val_set_size": 0}, "output": str(tmp_path / "packed")}
    assert CliRunner().invoke(cli, ["build", str(make_recipe(r)), "--silent"]).exit_code == 0
    ds = load_from_disk(str(tmp_path / "packed"))["train"]
    pack = ds[0]
    text = CliRunner().invoke(cli, ["inspect", str(tmp_path / "packed"), "--row", "0", "--no-color"]).output
    marks = re.findall(r"── row (\d+)/(\d+): tokens (\d+)\.\.(\d+), (\d+) tokens, position_ids 0\.\.(\d+)", text)
    assert [int(m[4]) for m in marks] == pack["seq_lens"]
    assert all(int(m[1]) == len(pack["seq_lens"]) and int(m[5]) == int(m[4]) - 1 for m in marks)
    padding = 128 - sum(pack["seq_lens"])
    assert (f"── padding: tokens {128 - padding}..127, {padding} tokens" in text) == (padding > 0)
    # every packed row's own text sits under its marker
    parts = re.split(r"── (?:row \d+/\d+|padding)[^\n]*──\n", text)[1:]
    ends = [0] + list(accumulate(pack["seq_lens"]))
    for part, a, b in zip(parts, ends, ends[1:]):
        shown = _plain_to_text(part.rstrip("\n")).replace("«", "").replace("»", "")
        assert shown == _decode(hf_tokenizer, pack["input_ids"][a:b])
    table = CliRunner().invoke(cli, ["inspect", str(tmp_path / "packed"), "--row", "0", "--table"]).output
    assert table.count("── row ") == len(pack["seq_lens"]) and "pos_id" in table
    summary = CliRunner().invoke(cli, ["inspect", str(tmp_path / "packed")]).output
    rows, tokens = sum(len(s) for s in ds["seq_lens"]), sum(sum(s) for s in ds["seq_lens"])
    assert (f"packing: {rows:,} rows in {len(ds):,} packs of 128 tokens, {rows / len(ds):.2f} rows per pack, "
            f"efficiency {100 * tokens / (128 * len(ds)):.2f}%, padding {128 * len(ds) - tokens:,} tokens") in summary
    page = tmp_path / "p.html"
    CliRunner().invoke(cli, ["inspect", str(tmp_path / "packed"), "--row", "0", "--html", str(page)])
    assert page.read_text().count("<span class='boundary'>") == len(pack["seq_lens"]) + (padding > 0)
    assert "rows per pack" in page.read_text()
