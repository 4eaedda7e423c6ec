"""JSON Lines through pyarrow (sources/jsonl_arrow.py) give exactly what the json.loads path gives:
the same batches, chunks, FileInfo and progress, or the same error, for any file."""
import hashlib
import json
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datakit import sources
from datakit.errors import SourceError
from datakit.recipe import SourceConfig
from datakit.sources import jsonl_arrow, read_part, readers
from datakit.sources.formats import REASONING_KEYS, SHAREGPT_ROLES
from datakit.sources.readers import FileInfo

FORMATS = ("messages", "sharegpt", "text", "alpaca", "prompt_completion")


@contextmanager
def python_path():
    """read_part with the reference reader (one json.loads per line)."""
    def python_reader(path, info, *, fmt, columns, span=None):
        return readers.read_jsonl(path, info, span=span)

    with mock.patch.object(sources, "read_jsonl_arrow", python_reader):
        yield


@contextmanager
def small_chunks(rows, nbytes, window=jsonl_arrow.WINDOW):
    """Chunks of ``rows`` records or ``nbytes`` bytes, read from the file ``window`` bytes at a time."""
    with mock.patch.object(readers, "CHUNK_ROWS", rows), mock.patch.object(readers, "CHUNK_BYTES", nbytes), \
            mock.patch.object(jsonl_arrow, "WINDOW", window):
        yield


def outcome(path: Path, fmt: str, *, columns=None, span=None):
    """Everything a reader of the file can see: batches, FileInfo and progress, or the error."""
    cfg = SourceConfig(path=str(path), format=fmt, columns=columns or {})
    info, progress, batches = FileInfo(path=str(path)), [], []
    try:
        for batch in read_part(cfg, path, info, index=3, first_row=7, span=span, on_bytes=progress.append):
            batches.append(batch)
    except SourceError as e:
        return ("error", type(e), str(e), progress, info.bytes, info.records)
    return ("ok", [(b.schema, b.to_pylist()) for b in batches], progress, info.bytes, info.records,
            info._hash.hexdigest())


def assert_same(path, fmt, **kw):
    fast = outcome(path, fmt, **kw)
    with python_path():
        reference = outcome(path, fmt, **kw)
    assert fast == reference
    return fast


def fast_chunks(path, fmt, **kw):
    """How many chunks the fast reader made itself, and how many it handed to json.loads (which may
    have stopped at an error)."""
    fast = slow = 0
    try:
        for chunk in jsonl_arrow.read_jsonl_arrow(path, FileInfo(path=str(path)), fmt=fmt, columns={}, **kw):
            fast, slow = fast + (chunk.batch is not None), slow + (chunk.batch is None)
    except SourceError:
        slow += 1
    return fast, slow


# --- generated files -------------------------------------------------------------------------

texts = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=12),
    st.sampled_from(["", "中文字符", "😀 emoji", "tab\tand\nnewline", "quote \" and \\ slash", "Inf", "\ud800",
                     "\udc00", "\ud83d\ude00", "\u2028", "\x00", "-NaN", "}\n{"]))
scalars = st.one_of(texts, st.none(), st.integers(-3, 3), st.booleans(), st.just(1.5))
odd = st.one_of(scalars, st.lists(texts, max_size=2), st.dictionaries(st.sampled_from(["type", "text"]), texts,
                                                                         max_size=2))
value = st.one_of(texts, texts, texts, odd)


@st.composite
def turn(draw, role_key, content_key, roles):
    t = {role_key: draw(st.one_of(st.sampled_from(roles), st.sampled_from(roles), scalars)),
         content_key: draw(st.one_of(texts, texts, odd, st.lists(st.fixed_dictionaries(
             {"type": st.just("text"), "text": texts}), max_size=2)))}
    if draw(st.integers(0, 5)) == 0:
        t.pop(draw(st.sampled_from([role_key, content_key])))
    for k in draw(st.lists(st.sampled_from(REASONING_KEYS + ("name",)), max_size=2, unique=True)):
        t[k] = draw(st.one_of(texts, st.none(), st.integers(0, 2)))
    return t


ROLES = {"messages": ["system", "user", "assistant", "assistant"], "sharegpt": list(SHAREGPT_ROLES)}
KEYS = {"messages": ("messages", "role", "content"), "sharegpt": ("conversations", "from", "value")}


@st.composite
def record(draw, fmt):
    if fmt in KEYS:
        lst, rk, ck = KEYS[fmt]
        turns = draw(st.lists(turn(rk, ck, ROLES[fmt]), max_size=4))
        if draw(st.booleans()):
            turns.append({rk: "assistant" if fmt == "messages" else "gpt", ck: draw(texts)})
        rec = {lst: draw(st.one_of(st.just(turns), st.just(turns), st.just(turns), odd))}
    else:
        names = {"text": ["text"], "prompt_completion": ["prompt", "completion"],
                 "alpaca": ["instruction", "input", "output", "system"]}[fmt]
        rec = {n: draw(value) for n in names if draw(st.integers(0, 9))}
        if fmt == "alpaca" and draw(st.booleans()):
            rec["history"] = draw(st.one_of(st.lists(st.lists(texts, min_size=1, max_size=3), max_size=2), odd))
    if draw(st.integers(0, 4)) == 0:
        rec[draw(st.sampled_from(["id", "meta"]))] = draw(odd)
    return rec


def encode(rec, draw) -> bytes:
    """One line's bytes: json.dumps in one of its styles, or something json.loads refuses."""
    ascii_, spaced = draw(st.booleans()), draw(st.booleans())
    text = json.dumps(rec, ensure_ascii=ascii_, separators=(", ", ": ") if spaced else (",", ":"))
    line = text.encode("utf-8", "surrogatepass")  # a raw lone surrogate is invalid UTF-8
    kind = draw(st.integers(0, 30))
    odd_lines = {0: line[:-1], 1: line + line, 2: b" " + line, 3: line + b" ", 4: line.replace(b":", b":\n", 1),
                 5: line[:-1] + b',"x":Inf}', 6: line[:-1] + b',"x":' + b"[" * 3000 + b"]" * 3000 + b"}",
                 7: line[:-1] + b',"y":\xff}', 8: line[:-1] + b',"y":-NaN}', 9: b"[1]", 10: b'"text"',
                 11: line.replace(b"{", b'{"id":1,"id":2,', 1), 12: line + b"\r"}
    return odd_lines.get(kind, line)


clean_texts = st.text(st.characters(codec="utf-8"), max_size=12)


@st.composite
def well_formed(draw, fmt):
    """A record the format reads without complaint."""
    if fmt in KEYS:
        lst, rk, ck = KEYS[fmt]
        turns = draw(st.lists(st.fixed_dictionaries({rk: st.sampled_from(ROLES[fmt]), ck: clean_texts}, optional={
            k: st.one_of(clean_texts, st.none()) for k in REASONING_KEYS}), max_size=3))
        return {lst: turns + [{rk: "assistant" if fmt == "messages" else "gpt", ck: draw(clean_texts)}]}
    optional = {"text": (), "prompt_completion": (), "alpaca": ("input", "system", "history")}[fmt]
    required = {"text": ("text",), "prompt_completion": ("prompt", "completion"),
                "alpaca": ("instruction", "output")}[fmt]
    rec = {k: draw(clean_texts) for k in required}
    for k in optional:
        if draw(st.booleans()):
            rec[k] = draw(st.lists(st.lists(clean_texts, min_size=2, max_size=2), max_size=2) if k == "history"
                          else st.one_of(clean_texts, st.none()))
    return rec


@st.composite
def spoiled(draw, fmt):
    """A well-formed record with one thing wrong (or unusual but fine) in it."""
    rec = draw(well_formed(fmt))
    turns = rec.get(KEYS.get(fmt, ("",))[0])
    how = draw(st.sampled_from(["null", "drop", "extra", "type"] + (["no assistant", "turn", "empty"] if turns
                                                                    else [])))
    if how == "no assistant":
        del turns[-1]
    elif how == "empty":
        turns.clear()
    elif how == "turn":
        turn = draw(st.sampled_from(turns))
        key = draw(st.sampled_from(sorted(turn) + ["name", REASONING_KEYS[0]]))
        turn[key] = draw(st.one_of(odd, st.sampled_from(["tool", "human", "bot"])))
    else:
        key = draw(st.sampled_from(sorted(rec)))
        if how in ("null", "type"):
            rec[key] = None if how == "null" else draw(odd)
        elif how == "drop":
            del rec[key]
        else:
            rec[draw(st.sampled_from(["id", "meta"]))] = draw(odd)
    return rec


def odd_lines(line: bytes) -> list[bytes]:
    """Ways to write one record that json.loads and pyarrow read differently, or that one refuses."""
    first_value = line.find(b': "') + 3
    return [line[:-1], line + line, line + b" " + line, b" " + line, line + b" ", line.replace(b", ", b",\n", 1),
            line[:-1] + b', "x": Inf}', line[:-1] + b', "x": -NaN}', line[:-1] + b', "x": NaN}',
            line[:-1] + b', "x": ' + b"[" * 3000 + b"]" * 3000 + b"}",
            line[:first_value] + b"\xff" + line[first_value:], line[:first_value] + b"\xed\xa0\x80" + line[first_value:],
            line[:first_value] + b"\\ud800" + line[first_value:], line[:first_value] + b"\\ud83d\\ude00" + line[first_value:],
            line[:first_value] + b"\\udc00\\ud800" + line[first_value:],
            line.replace(b"{", line[:first_value] + b'x", ', 1), line + b"\r", readers.BOM + line, b"[" + line + b"]",
            b"", b"  ", b"\t\r", b"\x0c"]


@st.composite
def jsonl_file(draw, fmt):
    """Well-formed files, some with a few odd lines or records, some with anything."""
    kind = draw(st.sampled_from(["clean", "odd lines", "wild"]))
    lines = []
    for _ in range(draw(st.integers(0, 14))):
        if kind == "wild" and draw(st.integers(0, 7)) == 0:
            lines.append(draw(st.sampled_from([b"", b"  ", b"\t", b"\r", b"\x0c", b" \x0b "])))
        elif kind == "wild":
            lines.append(encode(draw(record(fmt)), draw))
        elif draw(st.integers(0, 5)) == 0:  # blank lines count in bytes only
            lines.append(draw(st.sampled_from([b"", b"  ", b"\t\r", b" " * 25])))
        else:
            lines.append(json.dumps(draw(well_formed(fmt)), ensure_ascii=False).encode())
    for _ in range(draw(st.integers(1, 2)) if kind == "odd lines" else 0):
        if draw(st.booleans()):
            line = json.dumps(draw(spoiled(fmt)), ensure_ascii=False).encode("utf-8", "surrogatepass")
        else:
            line = draw(st.sampled_from(odd_lines(json.dumps(draw(well_formed(fmt)), ensure_ascii=False).encode())))
        lines.insert(draw(st.integers(0, len(lines))), line)
    eol = draw(st.sampled_from([b"\n", b"\n", b"\r\n"]))
    data = eol.join(lines) + (eol if lines and draw(st.booleans()) else b"")
    if draw(st.integers(0, 5)) == 0:
        data = readers.BOM + data
    return data


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_fast_path_equals_json_loads(tmp_path, fmt, data):
    path = tmp_path / f"{fmt}.jsonl"
    path.write_bytes(data.draw(jsonl_file(fmt)))
    rows = data.draw(st.integers(1, 4))
    nbytes = data.draw(st.sampled_from([16, 40, 300, 1 << 20]))
    with small_chunks(rows, nbytes, data.draw(st.sampled_from([1, 7, 64, 1 << 20]))):
        assert_same(path, fmt)
        starts = [0] + [i + 1 for i, b in enumerate(path.read_bytes()) if b == 10]
        a, b = sorted(data.draw(st.lists(st.sampled_from(starts), min_size=2, max_size=2)))
        first_line = path.read_bytes()[:a].count(b"\n") + 1
        assert_same(path, fmt, span=(a, b, first_line))


# --- what the generated files check, spelled out -------------------------------------------------

def conversation(i, **extra):
    return {"messages": [{"role": "user", "content": f"q{i} 中文 😀"}, {"role": "assistant", "content": f"a{i}",
                                                                     **extra}]}


def write(path, records, *, eol=b"\n", bom=False, last_eol=True):
    data = eol.join(json.dumps(r, ensure_ascii=False).encode() for r in records) + (eol if last_eol else b"")
    path.write_bytes((readers.BOM if bom else b"") + data)
    return path


@pytest.mark.parametrize("eol,bom,last_eol", [(b"\n", False, True), (b"\r\n", True, False), (b"\n", True, True)])
def test_plain_files_read_fast_with_crlf_bom_and_no_last_newline(tmp_path, eol, bom, last_eol):
    p = write(tmp_path / "c.jsonl", [conversation(i) for i in range(1203)], eol=eol, bom=bom, last_eol=last_eol)
    assert fast_chunks(p, "messages") == (3, 0)
    result = assert_same(p, "messages")
    rows = [r for _, batch in result[1] for r in batch]
    assert rows[0]["_where"] == f"{p}:1" and rows[-1]["_where"] == f"{p}:1203" and rows[-1]["_group"] == 7 + 1202
    assert result[5] == hashlib.sha256(p.read_bytes()).hexdigest() and result[3] == p.stat().st_size


@pytest.mark.parametrize("records,blank_at,chunks,fast", [
    (1100, [700, 1100], [500, 500, 100], (3, 0)),  # the last chunk has the trailing blank line
    (1000, [1000, 1000], [500, 500], (2, 1)),  # trailing blank lines after a full chunk: bytes only
    (3, [0, 0, 2], [3], (1, 0)),
])
def test_blank_lines_count_in_bytes_only(tmp_path, records, blank_at, chunks, fast):
    p = tmp_path / "c.jsonl"
    lines = [json.dumps(conversation(i), ensure_ascii=False) for i in range(records)]
    for at in reversed(blank_at):
        lines.insert(at, " \t\r")
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert fast_chunks(p, "messages") == fast
    result = assert_same(p, "messages")
    assert [len(b) for _, b in result[1]] == chunks and sum(result[2]) == p.stat().st_size
    numbers = [int(r["_where"].rsplit(":", 1)[1]) for _, b in result[1] for r in b]
    assert numbers == [i + 1 for i, line in enumerate(lines) if line.strip()]


@pytest.mark.parametrize("extra", [{"reasoning": "think"}, {"thinking": None, "reasoning_content": "r"}])
def test_reasoning_keys_read_fast_as_the_first_that_is_set(tmp_path, extra):
    p = write(tmp_path / "c.jsonl", [conversation(i, **extra) for i in range(3)])
    assert fast_chunks(p, "messages") == (1, 0)
    rows = [r for _, b in assert_same(p, "messages")[1] for r in b]
    assert rows[0]["messages"][1]["reasoning_content"] == next(v for v in extra.values() if v)


def test_a_4_mb_row_ends_a_chunk(tmp_path):
    big = "x" * (readers.CHUNK_BYTES // 2)
    p = write(tmp_path / "t.jsonl", [{"text": big}, {"text": "a"}, {"text": big}, {"text": "b"}, {"text": "c"}])
    assert fast_chunks(p, "text") == (2, 0)
    result = assert_same(p, "text")
    assert [len(b) for _, b in result[1]] == [3, 2] and len(result[2]) == 2


@pytest.mark.parametrize("line,error", [
    (b'{"text": "a", "id": 7, "n": NaN, "tags": ["Inf", "Information"], "m": {"Infinity": -Infinity}}', None),
    (b'{"text": "a", "deep": ' + b"[" * 400 + b"]" * 400 + b"}", None),
    (b'{"text": "a\\ud83d\\ude00"}', "a surrogate pair"),
    (b'{"text": "a"}{"text": "b"}', "malformed JSON (Extra data, column 14)"),
    (b'{"text": "a", "n": Inf}', "malformed JSON (Expecting value, column 20)"),
    (b'{"text": "a", "n": [1, -Inf]}', "malformed JSON (Expecting value, column 24)"),
    (b'{"text": "a", "n": -NaN}', "malformed JSON (Expecting value, column 20)"),
    (b'{"text": "a", "n": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested deeper"),
    (b'{"text": "a", "n": "\xff"}', "invalid UTF-8 (byte 0xff)"),
    (b'{"text": "a\\ud800"}', "lone UTF-16 surrogate"),
    (b'{"text": null}', "field 'text': missing"),
])
def test_lines_json_loads_reads_otherwise_go_through_json_loads(tmp_path, line, error):
    """Keys the format does not read are skipped fast when nothing in them reads differently."""
    p = tmp_path / "t.jsonl"
    p.write_bytes(b'{"text": "x"}\n' + line + b"\n")
    result = assert_same(p, "text")
    if error is None:
        assert fast_chunks(p, "text") == (1, 0) and result[0] == "ok"
    elif error == "a surrogate pair":
        assert fast_chunks(p, "text") == (0, 1) and result[0] == "ok"
    else:
        assert fast_chunks(p, "text") == (0, 1) and error in result[2] and result[2].startswith(f"{p}:2: ")


@pytest.mark.parametrize("fmt,columns", [("messages", {"role": "from", "content": "value"}),
                                         ("alpaca", {"instruction": "q", "output": "a"}),
                                         ("messages", {"content": "reasoning"})])
def test_columns_renames(tmp_path, fmt, columns):
    if fmt == "messages":
        records = [{"messages": [{"from": "user", "value": "q", "reasoning": "r"},
                                 {"from": "assistant", "value": "a"}]}] * 3
    else:
        records = [{"q": "do", "a": "done", "history": [["h", "i"]], "system": None}] * 3
    p = write(tmp_path / "r.jsonl", records)
    assert assert_same(p, fmt, columns=columns)[0] == ("error" if "reasoning" in columns.values() else "ok")


def test_a_role_that_is_a_list_is_an_unknown_role(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text(json.dumps({"conversations": [{"from": [], "value": "q"}, {"from": "gpt", "value": "a"}]}) + "\n")
    result = assert_same(p, "sharegpt")
    assert result[0] == "error" and "conversations[0].from" in result[2] and "unknown role []" in result[2]


def test_a_chunk_ends_after_a_record_not_after_the_blank_line_that_fills_it(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_bytes(b'{"text": "a"}\n' + b" " * 25 + b'\n{"text": "b"}\n{"text": "c"}\n')
    with small_chunks(3, 30):
        assert fast_chunks(p, "text") == (2, 0)
        assert assert_same(p, "text")[2] == [54, 14]
