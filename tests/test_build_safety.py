"""A build never touches what it did not make: the recipe, the inputs and folders that are not
builds survive every option; rejects files go only where they may; a build killed at any moment
leaves the earlier output (or the new one) whole, and the next build cleans up."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import datakit
from datakit.cli import cli
from datakit.errors import OutputError

ROOT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".datakit-" in p.name)


def project(tmp_path: Path, tokenizer: Path, *, output: str, docs: int = 40, steps=None, source: str = "data/d.jsonl"):
    """A project folder: recipe.yaml, data/d.jsonl and a manifest.json of some other tool."""
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    (root / "data" / "d.jsonl").write_text("".join(
        json.dumps({"text": ("short" if i % 4 == 0 else f"document {i} has a few words in it")}) + "\n"
        for i in range(docs)))
    (root / "manifest.json").write_text('{"name": "my-web-app", "version": "1.0.0"}')
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "tokenizer": str(tokenizer), "sources": [{"path": source}],
        "transforms": steps or [{"tokenize": {}}, {"pack": {"block_size": 16}}], "output": output}))
    return root, recipe


# ---------------------------------------------------------------- what a build may replace

@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
@pytest.mark.parametrize("output, held", [(".", "the recipe"), ("data", "the input"), ("..", "the recipe")])
def test_a_folder_holding_the_recipe_or_an_input_is_never_replaced(tmp_path, hf_tokenizer, output, held, overwrite):
    root, recipe = project(tmp_path, hf_tokenizer, output=output)
    before = snapshot(tmp_path)
    result = CliRunner().invoke(cli, ["build", str(recipe), "--silent", *overwrite])
    assert result.exit_code == 1 and held in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before


def test_a_folder_with_some_other_manifest_is_not_a_build(tmp_path, hf_tokenizer):
    root, recipe = project(tmp_path, hf_tokenizer, output="../elsewhere")
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "manifest.json").write_text('{"name": "chrome-extension", "manifest_version": 3}')
    (other / "background.js").write_text("// mine")
    result = CliRunner().invoke(cli, ["build", str(recipe), "--silent", "--overwrite"])
    assert result.exit_code == 1 and "is not a datakit build" in result.output
    assert sorted(os.listdir(other)) == ["background.js", "manifest.json"]


@pytest.mark.parametrize("formats", [["hf"], ["hf", "parquet", "megatron", "mds"]])
def test_a_build_with_a_users_file_inside_is_not_replaced(tmp_path, hf_tokenizer, formats):
    """--overwrite replaces a build only when every file in it is one its manifest lists: a file or
    folder a user put into train/ or provenance/ stays, and the build says which."""
    root, recipe = project(tmp_path, hf_tokenizer, output="../out")
    body = yaml.safe_load(recipe.read_text())
    body["output"] = {"path": str(tmp_path / "out"), "formats": formats}
    recipe.write_text(yaml.safe_dump(body))
    for _ in range(2):  # a build it made is replaced, every format's files included
        result = CliRunner().invoke(cli, ["build", str(recipe), "--silent", "--overwrite"])
        assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    for extra, named in ((out / "train" / "mine.txt", "train/mine.txt"), (out / "provenance" / "sub", "provenance/sub/")):
        if named.endswith("/"):
            extra.mkdir()
        else:
            extra.write_text("my notes")
        before = snapshot(tmp_path)
        result = CliRunner().invoke(cli, ["build", str(recipe), "--silent", "--overwrite"])
        assert result.exit_code == 1 and f"did not write: {named}" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert snapshot(tmp_path) == before
        extra.rmdir() if extra.is_dir() else extra.unlink()


def test_the_tokenizer_folder_is_never_the_output(tmp_path, hf_tokenizer):
    import shutil

    tok = tmp_path / "tok"
    shutil.copytree(hf_tokenizer, tok)
    root, recipe = project(tmp_path, tok, output=str(tok))
    with pytest.raises(OutputError, match="the tokenizer"):
        datakit.run_build(recipe, overwrite=True, silent=True)
    assert sorted(os.listdir(tok)) == sorted(os.listdir(hf_tokenizer))


def test_an_output_named_like_a_pattern_touches_no_sibling(tmp_path, hf_tokenizer):
    root, recipe = project(tmp_path, hf_tokenizer, output="o/*")
    photos = root / "o" / ".photos.tmp-3999999-backup"
    photos.mkdir(parents=True)
    (photos / "img.jpg").write_text("precious")
    for _ in range(2):
        assert CliRunner().invoke(cli, ["build", str(recipe), "--silent", "--overwrite"]).exit_code == 0
    assert (photos / "img.jpg").read_text() == "precious"
    assert sorted(os.listdir(root / "o")) == ["*", ".photos.tmp-3999999-backup"]


def test_a_symlinked_output_keeps_its_link_and_leaves_nothing_beside_it(tmp_path, hf_tokenizer):
    root, recipe = project(tmp_path, hf_tokenizer, output="out")
    disk = tmp_path / "disk"
    disk.mkdir()
    (root / "out").symlink_to(disk / "build")
    (disk / "build").mkdir()
    for _ in range(2):
        assert CliRunner().invoke(cli, ["build", str(recipe), "--silent", "--overwrite"]).exit_code == 0
    assert (root / "out").is_symlink() and (disk / "build" / "manifest.json").is_file()
    assert os.listdir(disk) == ["build"] and hidden(root) == []
    assert datakit.load(root / "out")["train"].num_rows > 0


# ---------------------------------------------------------------- filter.rejects

FILTER = [{"filter": {"min_chars": 10, "rejects": None}}, {"tokenize": {}}, {"pack": {"block_size": 16}}]


def with_rejects(path: str) -> list[dict]:
    steps = json.loads(json.dumps(FILTER))
    steps[0]["filter"]["rejects"] = path
    return steps


@pytest.mark.parametrize("rejects, needle", [
    ("data/d.jsonl", "would overwrite or be read as the input"),
    ("recipe.yaml", "would overwrite or be read as the recipe"),
    ("data", "is a folder"),
    ("out/rejects.jsonl", "inside the output folder"),
    ("data/rejects.jsonl", "the input"),          # inside a folder source
])
def test_rejects_may_not_be_an_input_the_recipe_a_folder_or_inside_the_output(tmp_path, hf_tokenizer, rejects,
                                                                              needle):
    source = "data" if rejects == "data/rejects.jsonl" else "data/d.jsonl"
    root, recipe = project(tmp_path, hf_tokenizer, output="out", steps=with_rejects("rejects.jsonl"), source=source)
    assert CliRunner().invoke(cli, ["build", str(recipe), "--silent"]).exit_code == 0
    data = yaml.safe_load(recipe.read_text())
    data["transforms"] = with_rejects(rejects)
    recipe.write_text(yaml.safe_dump(data))
    before = snapshot(tmp_path)
    result = CliRunner().invoke(cli, ["build", str(recipe), "--silent", "--overwrite"])
    assert result.exit_code == 1 and needle in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before


def test_rejects_matching_a_glob_source_are_refused(tmp_path, hf_tokenizer):
    root, recipe = project(tmp_path, hf_tokenizer, output="out", steps=with_rejects("data/rejects.jsonl"),
                           source="data/*.jsonl")
    with pytest.raises(OutputError, match="the input"):
        datakit.run_build(recipe, silent=True)
    assert not (root / "data" / "rejects.jsonl").exists()


def test_rejects_appear_with_the_build_and_not_with_a_failed_one(tmp_path, hf_tokenizer):
    root, recipe = project(tmp_path, hf_tokenizer, output="out", steps=with_rejects("rejects.jsonl"))
    datakit.run_build(recipe, silent=True)
    rejected = [json.loads(line) for line in (root / "rejects.jsonl").read_text().splitlines()]
    assert len(rejected) == 10 and {r["reason"] for r in rejected} == {"too_few_chars"}
    assert {r["row"]["text"] for r in rejected} == {"short"}
    (root / "data" / "d.jsonl").write_text('{"text": "a fine row"}\n{"text": "short"}\n{"text": broken\n')
    before = snapshot(root)
    with pytest.raises(datakit.SourceError):
        datakit.run_build(recipe, overwrite=True, silent=True)
    assert snapshot(root) == before and hidden(root) == []


@pytest.mark.parametrize("content", [b"my notes\n", b'{"name": "my-web-app"}\n', b"\x00\xff"])
def test_rejects_never_replace_a_file_datakit_did_not_write(tmp_path, hf_tokenizer, content):
    root, recipe = project(tmp_path, hf_tokenizer, output="out", steps=with_rejects("notes.txt"))
    (root / "notes.txt").write_bytes(content)
    before = snapshot(tmp_path)
    result = CliRunner().invoke(cli, ["build", str(recipe), "--silent", "--overwrite"])
    assert result.exit_code == 1 and "is not a rejects file datakit wrote" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before
    (root / "notes.txt").unlink()  # a rejects file it wrote, and an empty one, it replaces
    for _ in range(2):
        result = CliRunner().invoke(cli, ["build", str(recipe), "--silent", "--overwrite"])
        assert result.exit_code == 0, result.output
        assert {json.loads(line)["reason"] for line in (root / "notes.txt").read_text().splitlines()} == {"too_few_chars"}
    (root / "notes.txt").write_text("")
    assert CliRunner().invoke(cli, ["build", str(recipe), "--silent", "--overwrite"]).exit_code == 0


def test_rejects_move_with_the_recipe_not_with_output(tmp_path, hf_tokenizer):
    """`rejects` resolves against the recipe's folder like every recipe path; `--output` moves
    only the build (README: "filter.rejects and --output")."""
    root, recipe = project(tmp_path, hf_tokenizer, output="out", steps=with_rejects("rejects.jsonl"))
    result = CliRunner().invoke(cli, ["build", str(recipe), "--silent", "-o", str(tmp_path / "other")])
    assert result.exit_code == 0, result.output
    assert (root / "rejects.jsonl").is_file() and (tmp_path / "other" / "manifest.json").is_file()


# ---------------------------------------------------------------- killed builds

def _big_project(tmp_path, tokenizer, *, rejects: bool):
    root = tmp_path / "p"
    root.mkdir()
    with open(root / "big.jsonl", "w") as f:
        for i in range(12_000):
            f.write('{"text": "%s"}\n' % ("tiny" if i % 7 == 0 else f"document {i} with a few words in it"))
    steps = [{"tokenize": {}}, {"pack": {"block_size": 16}}]
    if rejects:
        steps.insert(0, {"filter": {"min_chars": 10, "rejects": "rejects.jsonl"}})
    recipe = root / "r.yaml"
    recipe.write_text(yaml.safe_dump({"tokenizer": str(tokenizer), "sources": [{"path": "big.jsonl"}],
                                      "transforms": steps, "output": "out"}))
    return root, recipe


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _start(recipe: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "datakit", "build", str(recipe), "--overwrite", "--silent"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())


def _wait_for(pred, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline and not pred():
        time.sleep(0.01)
    return pred()


@pytest.mark.parametrize("moment", ["staging", "rejects written", "late"])
def test_kill_9_at_several_moments_then_the_next_build_cleans_up(tmp_path, hf_tokenizer, moment):
    root, recipe = _big_project(tmp_path, hf_tokenizer, rejects=True)
    first = datakit.run_build(recipe, silent=True)
    before = snapshot(root / "out")
    proc = _start(recipe)
    if moment == "staging":
        assert _wait_for(lambda: any(".out.datakit-stage-" in n for n in os.listdir(root)))
    elif moment == "rejects written":
        assert _wait_for(lambda: any(".rejects.jsonl.datakit-part-" in n for n in os.listdir(root)))
    else:
        _wait_for(lambda: proc.poll() is not None, timeout=0.8)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # at this instant: the earlier build, whole, or the new one
    out = root / "out"
    assert not out.exists() or snapshot(out) == before or json.loads((out / "manifest.json").read_text())["layout"]
    datakit.run_build(recipe, overwrite=True, silent=True)
    assert hidden(root) == [] and sorted(os.listdir(root)) == ["big.jsonl", "out", "r.yaml", "rejects.jsonl"]
    ds = datakit.load(out)
    assert ds["train"].num_rows == first.manifest["splits"]["train"]["rows"]


def test_sigterm_mid_build_keeps_the_earlier_output(tmp_path, hf_tokenizer):
    root, recipe = _big_project(tmp_path, hf_tokenizer, rejects=True)
    datakit.run_build(recipe, silent=True)
    before = snapshot(root)
    proc = _start(recipe)
    assert _wait_for(lambda: any(".out.datakit-stage-" in n for n in os.listdir(root)))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("interrupted"), err.decode()
    if "in place" not in lines[0]:
        assert snapshot(root) == before and "is untouched" in lines[0]
    assert hidden(root) == []


def test_a_build_in_several_formats_is_replaced_by_the_next_one(tmp_path, hf_tokenizer):
    root, recipe = project(tmp_path, hf_tokenizer, output="out")
    data = yaml.safe_load(recipe.read_text())
    data["output"] = {"path": "out", "formats": ["hf", "parquet"]}
    recipe.write_text(yaml.safe_dump(data))
    for _ in range(2):
        datakit.run_build(recipe, overwrite=True, silent=True)
    manifest = json.loads((root / "out" / "manifest.json").read_text())
    assert sorted(os.listdir(root / "out")) == manifest["layout"]
    assert "parquet" in manifest["layout"] and hidden(root) == []
