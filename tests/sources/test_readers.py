"""Readers: documents and where they came from, streaming chunks, and one clear error per bad input."""
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datakit.errors import SourceError
from datakit.recipe import SourceConfig
from datakit.sources import read_source


def read(path, **cfg):
    files = []
    batches = list(read_source(SourceConfig(path=str(path), **cfg), files=files))
    rows = [r for b in batches for r in b.to_pylist()]
    return rows, files


def test_separated_text_keeps_line_numbers_and_hashes_the_file(tmp_path):
    import hashlib

    p = tmp_path / "t.txt"
    p.write_text("first doc\nstill first\n\nsecond\n\n\n\nthird\n")
    rows, files = read(p, document_separator="\n\n")
    assert [r["text"] for r in rows] == ["first doc\nstill first", "second", "third\n"]
    assert [r["_where"] for r in rows] == [f"{p}:1", f"{p}:4", f"{p}:8"]
    assert files[0].sha256 == hashlib.sha256(p.read_bytes()).hexdigest() and files[0].records == 3
    assert [r["_group"] for r in rows] == [0, 1, 2] and {r["_source"] for r in rows} == {0}


def test_a_whole_file_is_one_document(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("a\n\nb\n")
    rows, _ = read(p)
    assert [r["text"] for r in rows] == ["a\n\nb\n"]


def test_json_object_parquet_rows_and_column_maps(tmp_path):
    (tmp_path / "one.json").write_text(json.dumps({"body": "single record"}))
    rows, _ = read(tmp_path / "one.json", columns={"text": "body"})
    assert rows[0]["text"] == "single record" and rows[0]["_where"].endswith("one.json: row 0")
    pq.write_table(pa.table({"text": ["x", "y"]}), tmp_path / "t.parquet")
    rows, _ = read(tmp_path / "t.parquet")
    assert [r["_where"].rsplit(":", 1)[1].strip() for r in rows] == ["row 0", "row 1"]


def test_a_json_array_is_parsed_in_chunks_and_equals_json_loads(tmp_path):
    records = [{"text": f"doc {i}\n\u4e2d", "n": [i, {"x": None}]} for i in range(2345)]
    p = tmp_path / "a.json"
    p.write_text(json.dumps(records, indent=1, ensure_ascii=False), encoding="utf-8")
    files = []
    batches = list(read_source(SourceConfig(path=str(p)), files=files))
    from datakit.sources.readers import CHUNK_ROWS

    assert [b.num_rows for b in batches] == [CHUNK_ROWS] * (2345 // CHUNK_ROWS) + [2345 % CHUNK_ROWS]
    rows = [r for b in batches for r in b.to_pylist()]
    assert [r["text"] for r in rows] == [r["text"] for r in json.loads(p.read_text("utf-8"))]
    assert rows[2344]["_where"].endswith("a.json: row 2344")
    import hashlib
    assert files[0].sha256 == hashlib.sha256(p.read_bytes()).hexdigest() and files[0].records == 2345


@pytest.mark.parametrize("layout", ["compact", "indented", "crlf", "bom", "spaces"])
def test_json_array_layouts_read_as_json_loads_does(tmp_path, layout):
    records = [{"text": f"\u4e2d {i} \U0001F600", "n": 12345 if i % 2 else 1.5e-3} for i in range(7)]
    body = {"compact": json.dumps(records, ensure_ascii=False),
            "indented": json.dumps(records, indent=2, ensure_ascii=False),
            "crlf": json.dumps(records, indent=1, ensure_ascii=False).replace("\n", "\r\n"),
            "bom": "\ufeff" + json.dumps(records, ensure_ascii=False),
            "spaces": " \n [ \n" + " ,\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n ] \n"}[layout]
    p = tmp_path / "a.json"
    p.write_bytes(body.encode("utf-8"))
    rows, _ = read(p)
    assert [r["text"] for r in rows] == [r["text"] for r in json.loads(body.lstrip("\ufeff"))]
    bad = tmp_path / "bad.json"
    lines = body.lstrip("\ufeff").rstrip().rstrip("]").rstrip().split("\n")
    bad.write_bytes(("\n".join(lines) + ",\n{oops}]").encode("utf-8"))
    with pytest.raises(SourceError, match=f"bad.json:{len(lines) + 1}: malformed JSON"):
        read(bad)


def test_a_json_array_reports_its_bytes_as_it_is_parsed(tmp_path):
    """The progress bar moves during the parse of a big array (it used to sit at 0% until the end)."""
    from datakit.sources.readers import CHUNK_ROWS

    records = [{"text": "é" * (i % 50), "i": i} for i in range(5 * CHUNK_ROWS + 3)]
    p = tmp_path / "a.json"
    p.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    seen = []
    files = []
    for b in read_source(SourceConfig(path=str(p)), files=files, on_bytes=seen.append):
        assert b.num_rows
    assert sum(seen) == p.stat().st_size == files[0].bytes
    assert len(seen) == 6 and all(n > 0 for n in seen)
    for k in range(1, 6):  # each chunk reports the bytes parsed up to its last record and the comma
        parsed = json.dumps(records[:k * CHUNK_ROWS], ensure_ascii=False)[:-1] + ", "
        assert sum(seen[:k]) == len(parsed.encode())


def test_jsonl_is_read_in_chunks(tmp_path):
    from datakit.sources import readers

    p = tmp_path / "d.jsonl"
    n = 2 * readers.CHUNK_ROWS + 37
    p.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(n)))
    batches = list(read_source(SourceConfig(path=str(p)), files=[]))
    assert [b.num_rows for b in batches] == [readers.CHUNK_ROWS, readers.CHUNK_ROWS, 37]


@pytest.mark.parametrize("name, content, message", [
    ("bad.txt", b"ok\n\xc3\x28 broken\n", "bad.txt:2: invalid UTF-8"),
    ("bad.json", b'[{"text": "a"},\n {"text": }]', "bad.json:2: malformed JSON"),
    ("bad.json", b'"just a string"', "must hold an array of records"),
    ("bad.json", b'[{"text": "a"}\n\n {"text": "b"}]', "bad.json:3: malformed JSON \\(expected ',' or ']'"),
    ("bad.json", b'[{"text": "a"},\n]', "bad.json:2: malformed JSON"),
    ("bad.json", b'[{"text": "a"}]\n]', "bad.json:2: malformed JSON \\(extra data"),
    ("bad.json", b'[{"text": "a"}', "bad.json:1: malformed JSON"),
    ("empty.json", b' [ ] ', "empty.json: empty input: no records"),
    ("empty.jsonl", b"\n\n", "empty.jsonl: empty input: no records"),
    ("cut.jsonl", b'{"text": "a"}\n{"text": [\n', "cut.jsonl:2: malformed JSON \\(Expecting value, column 11\\)"),
    ("list.jsonl", b'["not", "an", "object"]\n', "list.jsonl:1: a record must be a JSON object"),
    ("deep.jsonl", b'{"text": "a"}\n{"text": ' + b"[" * 100000 + b"]" * 100000 + b"}\n", "deep.jsonl:2: malformed JSON \\(arrays"),
    ("deep.json", b'[{"text": "a"},\n' + b"[" * 100000 + b"]" * 100000 + b"]", "deep.json:2: malformed JSON \\(arrays"),
])
def test_bad_files(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(SourceError, match=message):
        read(p)


def test_missing_paths(tmp_path):
    with pytest.raises(SourceError, match="file not found"):
        read(tmp_path / "nope.jsonl")
    with pytest.raises(SourceError, match="no input files match"):
        read(str(tmp_path / "*.jsonl"))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(SourceError, match="folder holds no readable files"):
        read(tmp_path / "empty_dir")


DOCS = [f"Document {i} starts here.\nIts second line, {i}.\n" for i in range(18)]


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("separator", [None, "\n\n", "\r\n\r\n"])
def test_text_reads_as_python_text_mode_does(tmp_path, eol, bom, separator):
    """A BOM is not data and CRLF/CR line ends read as LF (Python's universal newlines), before
    the separator splits the file: 18 documents, whatever editor wrote them."""
    p = tmp_path / "t.txt"
    p.write_bytes((b"\xef\xbb\xbf" if bom else b"") + "\n".join(DOCS).replace("\n", eol).encode("utf-8"))
    with open(p, encoding="utf-8-sig", newline=None) as f:  # the reference: Python's own text mode
        expected = f.read()
    rows, files = read(p, document_separator=separator)
    if separator is None:
        assert [r["text"] for r in rows] == [expected]
    else:
        assert [r["text"] for r in rows] == [d for d in expected.split("\n\n") if d.strip()]
        assert len(rows) == 18
        assert [r["_where"] for r in rows] == [f"{p}:{1 + 3 * i}" for i in range(18)]
    assert files[0].bytes == p.stat().st_size


@pytest.mark.parametrize("name, body", [
    ("a.jsonl", '{"text": "first"}\n{"text": "second"}\n'),
    ("a.json", '[{"text": "first"}, {"text": "second"}]'),
    ("o.json", '{"text": "first"}'),
    ("a.csv", "text\nfirst\nsecond\n"),
])
def test_a_bom_is_accepted_in_json_jsonl_and_csv(tmp_path, name, body):
    p = tmp_path / name
    p.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    rows, _ = read(p)
    assert [r["text"] for r in rows] == ["first", "second"][:len(rows)] and rows


def test_arrow_readers_report_bytes_as_they_go(tmp_path, monkeypatch):
    from datakit.sources import readers

    monkeypatch.setattr(readers, "CHUNK_ROWS", 100)
    texts = [f"row {i} " + "x" * (i % 37) for i in range(1000)]
    pq.write_table(pa.table({"text": texts}), tmp_path / "t.parquet", row_group_size=100)
    (tmp_path / "t.csv").write_text("text\n" + "".join(f"{t}\n" for t in texts))
    for p, moves in [(tmp_path / "t.parquet", True), (tmp_path / "t.csv", False)]:  # one 1 MB CSV block
        seen = []
        rows = [r for b in read_source(SourceConfig(path=str(p)), files=[], on_bytes=seen.append)
                for r in b.to_pylist()]
        assert [r["text"] for r in rows] == texts
        assert sum(seen) == p.stat().st_size and min(seen) >= 0
        assert sum(1 for n in seen if n > 0) >= (5 if moves else 1)


@pytest.mark.parametrize("fmt, line, field", [
    ("text", '{"text": "a \\ud800 b"}', "text"),
    ("messages", '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x\\udfff"}]}',
     "messages[1].content"),
])
def test_a_lone_surrogate_escape_is_one_line_naming_the_row_and_field(tmp_path, fmt, line, field):
    """JSON may spell half a UTF-16 pair ("\\ud800"), which json.loads accepts but no UTF-8 text holds."""
    p = tmp_path / "d.jsonl"
    ok = '{"text": "fine"}' if fmt == "text" else \
        '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}'
    p.write_text(ok + "\n" + line + "\n")
    with pytest.raises(SourceError, match=rf"d.jsonl:2: field '{re.escape(field)}': holds a lone UTF-16 surrogate"):
        list(read_source(SourceConfig(path=str(p), format=fmt), files=[]))


def test_csv_cells_are_text(tmp_path):
    """CSV has no types: numbers, booleans and empty cells are the text they spell, as Python's csv reads them."""
    import csv

    p = tmp_path / "a.csv"
    p.write_text("instruction,input,output\nWhat is 6*7?,,42\nIs it true?,x,true\nnull,,1.50\n")
    rows = [r for b in read_source(SourceConfig(path=str(p), format="alpaca"), files=[]) for r in b.to_pylist()]
    want = list(csv.DictReader(p.open()))
    assert [{k: r[k] for k in ("instruction", "input", "output")} for r in rows] == want


def test_csv_with_invalid_utf8_is_one_line(tmp_path):
    p = tmp_path / "b.csv"
    p.write_bytes(b"instruction,output\nhi,ok\nbad,\xc3\x28 broken\n")
    with pytest.raises(SourceError, match=r"b.csv: not a readable CSV file \(.*invalid UTF8"):
        list(read_source(SourceConfig(path=str(p), format="alpaca"), files=[]))


def test_a_csv_header_naming_a_column_twice_is_one_line(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("instruction,instruction,output\na,b,c\n")
    with pytest.raises(SourceError, match=r"c.csv:1: the header names column 'instruction' more than once"):
        read(p)
