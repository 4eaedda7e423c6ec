"""The tokenized-rows cache: what hits, what misses, and that a hit builds what a cold build does."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import datakit.cache
from datakit.builder import run_build
from datakit.cache import Cache, canonical, parse_size
from datakit.cli import cli
from datakit.tokenization.hf import HFTokenizer

CORPUS = Path(__file__).resolve().parents[1] / "examples" / "data" / "corpus.txt"
ALPACA = Path(__file__).resolve().parents[1] / "examples" / "data" / "alpaca_sample.json"
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}")


@pytest.fixture
def inputs(tmp_path) -> Path:
    """Two text sources (the example corpus cut in two)."""
    folder = tmp_path / "in"
    folder.mkdir()
    paragraphs = CORPUS.read_text("utf-8").split("\n\n")
    half = len(paragraphs) // 2
    (folder / "a.txt").write_text("\n\n".join(paragraphs[:half]), "utf-8")
    (folder / "b.txt").write_text("\n\n".join(paragraphs[half:]), "utf-8")
    return folder


def pretrain(tokenizer: Path, inputs: Path, **changes) -> dict:
    recipe = {
        "tokenizer": str(tokenizer),
        "sources": [{"path": str(inputs / "a.txt"), "format": "text", "document_separator": "\n\n"},
                    {"path": str(inputs / "b.txt"), "format": "text", "document_separator": "\n\n"}],
        "transforms": [{"tokenize": {}}, {"pack": {"block_size": 64, "eos": "per_document", "remainder": "pad"}}],
        "split": {"val_set_size": 0.2, "seed": 1},
        "output": "unused",
    }
    recipe.update(changes)
    return recipe


def sft(tokenizer: Path, tmp_path: Path, *, template: str = CHATML) -> dict:
    return {"tokenizer": str(tokenizer),
            "sources": [{"path": str(ALPACA), "format": "alpaca"}],
            "chat_template": template,
            "transforms": [{"template": "chat"}, {"tokenize": {"cutoff_len": 256}}],
            "split": {"val_set_size": 0.2, "seed": 1}, "output": "unused"}


def build(recipe: dict, out: Path, **options) -> dict:
    return run_build(recipe, output=out, overwrite=True, silent=True, **options).manifest


def hits(manifest: dict) -> list[bool]:
    return [s["hit"] for s in manifest["cache"]["sources"]]


def arrow_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.arrow"))}


def same_build(a: Path, b: Path) -> None:
    """Same Arrow bytes and the same manifest, but for timings and the cache's record."""
    assert arrow_files(a) == arrow_files(b) and arrow_files(a)
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    for m in (ma, mb):
        for key in ("timings", "cache", "inputs_fingerprint"):
            m.pop(key, None)
        for f in m["inputs"]:
            f.pop("path")
    assert ma == mb


def test_rebuild_hits_and_writes_the_same_bytes(hf_tokenizer, inputs, tmp_path):
    recipe = pretrain(hf_tokenizer, inputs)
    assert hits(build(recipe, tmp_path / "one")) == [False, False]
    assert hits(build(recipe, tmp_path / "two")) == [True, True]
    assert "cache" not in build(recipe, tmp_path / "cold", cache=False)
    same_build(tmp_path / "one", tmp_path / "two")
    same_build(tmp_path / "cold", tmp_path / "two")


def test_a_hit_does_not_tokenize(hf_tokenizer, inputs, tmp_path, monkeypatch):
    recipe = pretrain(hf_tokenizer, inputs)
    build(recipe, tmp_path / "one")
    calls = []
    encode = HFTokenizer.encode
    monkeypatch.setattr(HFTokenizer, "encode", lambda self, texts, **kw: calls.append(len(texts)) or
                        encode(self, texts, **kw))
    build(recipe, tmp_path / "two")
    assert calls == []
    build(recipe, tmp_path / "three", cache=False)
    assert sum(calls) > 0


def test_editing_one_source_retokenizes_only_it(hf_tokenizer, inputs, tmp_path):
    recipe = pretrain(hf_tokenizer, inputs)
    build(recipe, tmp_path / "one")
    with open(inputs / "b.txt", "a", encoding="utf-8") as f:
        f.write("\n\nA new paragraph about something else entirely.")
    assert hits(build(recipe, tmp_path / "two")) == [True, False]
    build(recipe, tmp_path / "cold", cache=False)
    same_build(tmp_path / "cold", tmp_path / "two")


@pytest.mark.parametrize("change", [
    {"split": {"val_set_size": 0.3, "seed": 7}},
    {"transforms": [{"tokenize": {}}, {"pack": {"block_size": 32, "eos": "per_document", "remainder": "drop"}}]},
    "mixing",
])
def test_split_mixing_and_pack_options_retokenize_nothing(hf_tokenizer, inputs, tmp_path, change):
    build(pretrain(hf_tokenizer, inputs), tmp_path / "one")
    if change == "mixing":
        recipe = pretrain(hf_tokenizer, inputs)
        recipe["sources"][0]["repeat"] = 2
        recipe["sources"][1]["name"] = "second"
    else:
        recipe = pretrain(hf_tokenizer, inputs, **change)
    assert hits(build(recipe, tmp_path / "two")) == [True, True]
    build(recipe, tmp_path / "cold", cache=False)
    same_build(tmp_path / "cold", tmp_path / "two")


def test_each_kind_of_change_misses(hf_tokenizer, inputs, tmp_path, monkeypatch):
    recipe = pretrain(hf_tokenizer, inputs)
    build(recipe, tmp_path / "base")

    (inputs / "a.txt").write_bytes((inputs / "a.txt").read_bytes().replace(b"the", b"teh", 1))  # input bytes
    assert hits(build(recipe, tmp_path / "bytes")) == [False, True]

    options = pretrain(hf_tokenizer, inputs, transforms=[{"tokenize": {"add_special_tokens": False}},
                                                         {"pack": {"block_size": 64}}])
    assert hits(build(options, tmp_path / "option")) == [False, False]

    tokenizer = tmp_path / "tok"  # the same tokenizer with one file changed
    shutil.copytree(hf_tokenizer, tokenizer)
    config = json.loads((tokenizer / "tokenizer_config.json").read_text())
    config["model_max_length"] = 12345
    (tokenizer / "tokenizer_config.json").write_text(json.dumps(config))
    assert hits(build(pretrain(tokenizer, inputs), tmp_path / "tokenizer")) == [False, False]

    monkeypatch.setattr(datakit.cache, "__version__", "99.0")
    assert hits(build(recipe, tmp_path / "version")) == [False, False]
    assert hits(build(recipe, tmp_path / "again")) == [True, True]


def test_the_template_is_part_of_the_key(hf_tokenizer, tmp_path):
    assert hits(build(sft(hf_tokenizer, tmp_path), tmp_path / "one")) == [False]
    assert hits(build(sft(hf_tokenizer, tmp_path), tmp_path / "two")) == [True]
    same_build(tmp_path / "one", tmp_path / "two")
    changed = sft(hf_tokenizer, tmp_path, template=CHATML.replace("'\\n'", "':\\n'"))
    assert hits(build(changed, tmp_path / "three")) == [False]
    template = tmp_path / "t.jinja"  # a template file: its text is the key, not its name
    template.write_text(CHATML)
    assert hits(build(sft(hf_tokenizer, tmp_path, template=str(template)), tmp_path / "four")) == [True]
    template.write_text(CHATML.replace("'\\n'", "' \\n'"))
    assert hits(build(sft(hf_tokenizer, tmp_path, template=str(template)), tmp_path / "five")) == [False]


def test_output_path_cwd_and_key_order_do_not_miss(hf_tokenizer, inputs, tmp_path, monkeypatch):
    recipe = pretrain(hf_tokenizer, inputs)
    recipe["sources"] = [{"path": f"in/{n}", "format": "text", "document_separator": "\n\n"} for n in ("a.txt", "b.txt")]
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    build(str(tmp_path / "r.yaml"), tmp_path / "one")
    reordered = {k: recipe[k] for k in reversed(list(recipe))}
    reordered["sources"] = [dict(reversed(list(s.items()))) for s in recipe["sources"]]
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copytree(inputs, moved / "in")  # the same bytes at another path
    (moved / "r.yaml").write_text(yaml.safe_dump(reordered, sort_keys=False))
    monkeypatch.chdir(inputs)
    assert hits(build(str(moved / "r.yaml"), tmp_path / "other" / "two")) == [True, True]
    assert arrow_files(tmp_path / "one") == arrow_files(tmp_path / "other" / "two")
    inputs_two = json.loads((tmp_path / "other" / "two" / "manifest.json").read_text())["inputs"]
    assert [f["path"] for f in inputs_two] == [str(moved / "in" / n) for n in ("a.txt", "b.txt")]


@pytest.mark.parametrize("damage", ["truncate", "garbage_json", "no_entry_json"])
def test_a_damaged_entry_is_rebuilt_never_used(hf_tokenizer, inputs, tmp_path, damage):
    recipe = pretrain(hf_tokenizer, inputs)
    first = build(recipe, tmp_path / "one")
    cache = Cache()
    entry = cache.path(first["cache"]["sources"][0]["key"])
    rows = entry / "rows.arrow"
    if damage == "truncate":
        rows.write_bytes(rows.read_bytes()[:rows.stat().st_size // 2])
    elif damage == "garbage_json":
        (entry / "entry.json").write_text("{not json")
    else:
        (entry / "entry.json").unlink()
    assert hits(build(recipe, tmp_path / "two")) == [False, True]
    same_build(tmp_path / "one", tmp_path / "two")
    assert hits(build(recipe, tmp_path / "three")) == [True, True]  # rebuilt whole


def test_a_failed_build_leaves_no_entry(hf_tokenizer, inputs, tmp_path):
    (inputs / "b.txt").write_bytes(b"ok text\n\n\xff\xfe bad bytes")
    with pytest.raises(datakit.errors.DatakitError):
        build(pretrain(hf_tokenizer, inputs), tmp_path / "one")
    assert Cache().info()["entries"] == 1  # a.txt, finished before b.txt failed
    assert not any((Cache().root / "tmp").iterdir())


def test_steps_before_tokenize_that_need_every_source_are_not_cached(hf_tokenizer, inputs, tmp_path):
    recipe = pretrain(hf_tokenizer, inputs, transforms=[{"dedup": {"mode": "exact"}}, {"tokenize": {}},
                                                                 {"pack": {"block_size": 64}}])
    assert "cache" not in build(recipe, tmp_path / "one")
    assert Cache().info()["entries"] == 0


def test_least_recently_used_entries_are_evicted(hf_tokenizer, inputs, tmp_path):
    recipe = pretrain(hf_tokenizer, inputs)
    manifest = build(recipe, tmp_path / "one")
    cache = Cache()
    a, b = (cache.path(s["key"]) for s in manifest["cache"]["sources"])
    os.utime(a, (1, 1))  # a used long ago, b just now
    size_b = sum(f.stat().st_size for f in b.iterdir())
    Cache(max_bytes=size_b).evict()
    assert not a.exists() and b.exists()
    # a build evicts once it has read every source (never an entry it is about to use): under a
    # limit that holds one entry, b is still there for it, and one entry is left
    assert hits(build(recipe, tmp_path / "two", cache_size=size_b + 10)) == [False, True]
    assert len(cache.entries()) == 1


def test_cache_info_and_clear(hf_tokenizer, inputs, tmp_path):
    build(pretrain(hf_tokenizer, inputs), tmp_path / "one", cache_dir=tmp_path / "c")
    size = Cache(tmp_path / "c").info()["bytes"]
    assert size > 0
    runner = CliRunner()
    info = runner.invoke(cli, ["cache", "info", "--cache-dir", str(tmp_path / "c")])
    assert info.exit_code == 0
    assert f"location: {tmp_path / 'c'}" in info.output and "entries:  2" in info.output
    cleared = runner.invoke(cli, ["cache", "clear", "--cache-dir", str(tmp_path / "c")])
    assert cleared.exit_code == 0 and cleared.output.startswith("removed 2 entries")
    assert Cache(tmp_path / "c").info()["entries"] == 0


def test_cache_clear_and_evict_leave_what_the_cache_did_not_make(hf_tokenizer, inputs, tmp_path):
    """A cache folder a user also keeps files in: clear removes its entries and unfinished writes,
    never the user's files or folders, even ones named like entries."""
    root = tmp_path / "c"
    build(pretrain(hf_tokenizer, inputs), tmp_path / "one", cache_dir=root)
    entry = Cache(root).entries()[0][0]
    mine = [root / "entries" / "notes.txt", root / "tmp" / "draft.txt", entry.parent / "mine.txt",
            root / "entries" / "ab" / ("ab" + "0" * 62) / "photo.jpg",  # named like an entry, holding other files
            root / "tmp" / ("0" * 16 + ".abc") / "thesis.tex"]  # named like a write, holding other files
    for f in mine:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("mine")
    (root / "tmp" / ("1" * 16 + ".xyz")).mkdir()  # an unfinished write of the cache's own: removed
    assert Cache(root).info()["entries"] == 2
    Cache(root, max_bytes=0).evict()
    assert all(f.read_text() == "mine" for f in mine)
    build(pretrain(hf_tokenizer, inputs), tmp_path / "two", cache_dir=root)
    cleared = CliRunner().invoke(cli, ["cache", "clear", "--cache-dir", str(root)])
    assert cleared.exit_code == 0 and cleared.output.startswith("removed 2 entries"), cleared.output
    assert all(f.read_text() == "mine" for f in mine)
    assert Cache(root).info()["entries"] == 0 and not (root / "tmp" / ("1" * 16 + ".xyz")).exists()


def test_no_cache_and_cache_dir_on_the_command_line(hf_tokenizer, inputs, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(pretrain(hf_tokenizer, inputs)))
    runner = CliRunner()
    out = runner.invoke(cli, ["build", str(recipe), "-o", str(tmp_path / "one"), "--silent", "--no-cache"])
    assert out.exit_code == 0, out.output
    assert Cache().info()["entries"] == 0
    out = runner.invoke(cli, ["build", str(recipe), "-o", str(tmp_path / "two"), "--silent",
                              "--cache-dir", str(tmp_path / "c")])
    assert out.exit_code == 0, out.output
    assert Cache(tmp_path / "c").info()["entries"] == 2 and Cache().info()["entries"] == 0


def test_sizes_parse_in_powers_of_ten():
    assert parse_size("20GB") == 20 * 10**9
    assert parse_size("500 mb") == 500 * 10**6
    assert parse_size("1.5k") == 1500
    assert parse_size(7) == 7
    assert parse_size("0") == 0
    for bad in ("lots", "-5GB", -1, "nan", "inf GB"):
        with pytest.raises(datakit.errors.DatakitError, match="not a size"):
            parse_size(bad)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5), st.none()), max_size=6),
       st.randoms())
def test_canonical_json_ignores_key_order(mapping, random):
    keys = list(mapping)
    random.shuffle(keys)
    assert canonical({k: mapping[k] for k in keys}) == canonical(mapping)
    assert json.loads(canonical(mapping)) == mapping
