"""Every failure of the output or of a built folder ends with one line and exit code 1, no
traceback: read-only output, full disk, a mount point, damaged builds, bad `inspect` options,
Ctrl-C at any moment."""
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

from datakit.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(result, *needles: str) -> str:
    """The CLI ended with exit code 1 and exactly one line that contains every needle."""
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def pretrain_recipe(folder: Path, tokenizer: Path, *, docs: int, output: Path, name: str = "r.yaml") -> Path:
    src = folder / f"{name}.jsonl"
    src.write_text("".join(json.dumps({"text": f"document {i} has a few words in it"}) + "\n" for i in range(docs)))
    recipe = folder / name
    recipe.write_text(yaml.safe_dump({"tokenizer": str(tokenizer), "sources": [{"path": str(src)}],
                                      "transforms": [{"tokenize": {}}, {"pack": {"block_size": 16}}],
                                      "output": str(output)}))
    return recipe


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- the output's filesystem

def test_a_read_only_output_folder(tmp_path, tmpfs, hf_tokenizer):
    ro = tmpfs("64k", ro=True)
    recipe = pretrain_recipe(tmp_path, hf_tokenizer, docs=5, output=ro / "out")
    one_line_error(CliRunner().invoke(cli, ["build", str(recipe), "--silent"]), "Read-only file system",
                   "nothing was written")


def test_a_full_disk_keeps_the_earlier_output(tmp_path, tmpfs, hf_tokenizer):
    disk = tmpfs("192k")
    small = pretrain_recipe(tmp_path, hf_tokenizer, docs=10, output=disk / "out", name="small.yaml")
    assert CliRunner().invoke(cli, ["build", str(small), "--silent"]).exit_code == 0
    before = snapshot(disk / "out")
    big = pretrain_recipe(tmp_path, hf_tokenizer, docs=20_000, output=disk / "out", name="big.yaml")
    one_line_error(CliRunner().invoke(cli, ["build", str(big), "--silent", "--overwrite"]),
                   "No space left on device", "is untouched")
    assert snapshot(disk / "out") == before
    assert sorted(os.listdir(disk)) == ["out"]


def test_an_output_that_is_a_mount_point_is_refused_before_any_work(tmp_path, tmpfs, hf_tokenizer, monkeypatch):
    mnt = tmpfs("64k")
    recipe = pretrain_recipe(tmp_path, hf_tokenizer, docs=5, output=mnt)
    import datakit.builder

    loaded = []
    monkeypatch.setattr(datakit.builder, "load_tokenizer", lambda *a, **k: loaded.append(1))
    one_line_error(CliRunner().invoke(cli, ["build", str(recipe), "--silent"]), "is a mount point")
    assert not loaded and os.listdir(mnt) == []


def test_library_errors_name_no_flags_and_the_cli_adds_them(tmp_path, hf_tokenizer):
    import datakit

    recipe = pretrain_recipe(tmp_path, hf_tokenizer, docs=5, output=tmp_path / "out")
    assert CliRunner().invoke(cli, ["build", str(recipe), "--silent"]).exit_code == 0
    with pytest.raises(datakit.OutputError) as e:
        datakit.run_build(recipe, silent=True)
    assert "--" not in str(e.value) and "overwrite=True" in str(e.value)
    one_line_error(CliRunner().invoke(cli, ["build", str(recipe), "--silent"]), "pass --overwrite")


# ---------------------------------------------------------------- inspect on damaged builds

@pytest.fixture
def built(tmp_path, hf_tokenizer):
    recipe = pretrain_recipe(tmp_path, hf_tokenizer, docs=30, output=tmp_path / "out")
    assert CliRunner().invoke(cli, ["build", str(recipe), "--silent"]).exit_code == 0
    return tmp_path / "out"


def _truncate_arrow(out):
    f = out / "train" / "data-00000-of-00001.arrow"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _garble_arrow(out):
    f = out / "train" / "data-00000-of-00001.arrow"
    f.write_bytes(b"\x00garbage" * 100)


def _corrupt_manifest(out):
    (out / "manifest.json").write_text('{"datakit_version": "0.1.0", "kind": ')


def _foreign_manifest(out):
    (out / "manifest.json").write_text('["not", "a", "manifest"]')


def _no_dataset_dict(out):
    (out / "dataset_dict.json").unlink()


def _corrupt_dataset_dict(out):
    (out / "dataset_dict.json").write_text("{")


def _no_state(out):
    (out / "train" / "state.json").unlink()


def _missing_arrow(out):
    (out / "train" / "data-00000-of-00001.arrow").unlink()


def _null_tokenizer(out):
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["tokenizer"] = None
    (out / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, needle", [
    (_null_tokenizer, "'tokenizer' is not an object"),
    (_truncate_arrow, "not a readable Arrow stream"), (_garble_arrow, "not a readable Arrow stream"),
    (_corrupt_manifest, "manifest.json: not valid JSON"), (_foreign_manifest, "not a datakit manifest"),
    (_no_dataset_dict, "dataset_dict.json: missing"), (_corrupt_dataset_dict, "dataset_dict.json: not valid JSON"),
    (_no_state, "state.json: missing"), (_missing_arrow, ".arrow: missing")])
def test_inspect_on_a_damaged_build(built, damage, needle):
    damage(built)
    one_line_error(CliRunner().invoke(cli, ["inspect", str(built)]), needle)


def test_inspect_row_with_a_damaged_provenance_file(built):
    (built / "provenance" / "train.parquet").write_bytes(b"PA")
    result = CliRunner().invoke(cli, ["inspect", str(built), "--row", "0"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: ") and \
        "train.parquet: not a readable provenance file" in result.output


@pytest.mark.parametrize("args, needle", [
    (["--sample", "-1"], "--sample needs at least 1 row"), (["--sample", "0"], "--sample needs at least 1 row"),
    (["--row", "-1"], "out of range"), (["--row", "99999"], "out of range"),
    (["--split", "nope"], "no split 'nope'"),
    (["--html", "missing/folder/report.html"], "does not exist"), (["--html", "."], "it is a folder")])
def test_inspect_options_that_cannot_work(built, args, needle, monkeypatch):
    monkeypatch.chdir(built.parent)
    one_line_error(CliRunner().invoke(cli, ["inspect", str(built), *args]), needle)


@pytest.mark.parametrize("where", ["nothing_here", "a_file"])
def test_inspect_on_what_is_not_a_build(tmp_path, where):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "folder").mkdir()
    one_line_error(CliRunner().invoke(cli, ["inspect", str(tmp_path / where)]))
    one_line_error(CliRunner().invoke(cli, ["inspect", str(tmp_path / "folder")]), "not a datakit build")


# ---------------------------------------------------------------- Ctrl-C at any moment

# The console script is `from datakit.cli import main; main()`, run as `datakit`. This one says
# when datakit's package is found, so that the delays are measured from there: before it, Python's
# own start-up (site, the import system) handles Ctrl-C, and no code of datakit's has run yet.
LAUNCH = ("import os, sys; sys.argv[0] = 'datakit'; import datakit; os.write(1, b'up\\n'); "
          "from datakit.cli import main; main()")


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _as_from_a_terminal():
    """Ctrl-C's default disposition in the child, as a shell in a terminal gives it: a shell that
    runs the tests in the background (``cmd &``) passes SIGINT on ignored, and the children of an
    ignoring process would never see the signal these tests send."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03, 0.08, 0.15, 0.4, 1.0])
def test_ctrl_c_at_any_moment_of_a_build_is_one_line(tmp_path, hf_tokenizer, delay):
    out = tmp_path / "out"
    recipe = pretrain_recipe(tmp_path, hf_tokenizer, docs=20, output=out)
    assert CliRunner().invoke(cli, ["build", str(recipe), "--silent"]).exit_code == 0
    before = snapshot(out)
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "build", str(recipe), "--overwrite", "--silent"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
                            preexec_fn=_as_from_a_terminal)
    assert proc.stdout.readline() == b"up\n"
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    lines = err.decode().strip().splitlines()
    if proc.returncode == 0:  # the build finished before the signal came
        assert lines == []
    else:
        assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("interrupted"), err.decode()
        if "in place" in lines[0]:  # the swap had begun: the signal waited for it
            assert snapshot(out) != before and json.loads((out / "manifest.json").read_text())["layout"]
        else:
            assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []


# Ctrl-C at the N-th Python call while the command line loads: deterministic, where the timed test
# above is not. The last fraction is the end of the module, where the command definitions run.
AT_CALL = """
import os, signal, sys
sys.argv[0] = "datakit"
import datakit
at, calls = int(sys.argv[1]), [0]
def count(frame, event, arg):
    if event == "call":
        calls[0] += 1
        if calls[0] == at:
            os.kill(os.getpid(), signal.SIGINT)
sys.setprofile(count)
from datakit.cli import main
sys.setprofile(None)
print(calls[0], flush=True)
sys.argv[1:] = ["--version"]
main()
"""


def test_ctrl_c_at_any_call_while_the_cli_loads_is_one_line():
    total = subprocess.run([sys.executable, "-c", AT_CALL, "0"], capture_output=True, text=True, env=_env(),
                           preexec_fn=_as_from_a_terminal)
    assert total.returncode == 0, total.stderr
    n = int(total.stdout.split()[0])
    for at in sorted({1, n // 10, n // 3, n // 2, 3 * n // 4, n - 20, n - 2, n}):
        done = subprocess.run([sys.executable, "-c", AT_CALL, str(at)], capture_output=True, text=True, env=_env(),
                              preexec_fn=_as_from_a_terminal)
        assert done.returncode == 1 and done.stderr.strip() == "interrupted", (at, n, done.stderr[-600:])


def test_no_library_error_names_a_command_line_flag():
    """Errors raised outside cli.py speak to Python callers: `overwrite=True`, not `--overwrite`."""
    import ast
    import re

    flag = re.compile(r"(^|\s|\()--[a-z]")
    found = []
    for path in sorted((ROOT / "datakit").rglob("*.py")):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                for part in ast.walk(node.exc):
                    if isinstance(part, ast.Constant) and isinstance(part.value, str) and flag.search(part.value):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {part.value!r}")
    assert found == []


def test_inspect_html_never_replaces_a_file_it_did_not_write(built, tmp_path):
    manifest = built / "manifest.json"
    kept = manifest.read_bytes()
    one_line_error(CliRunner().invoke(cli, ["inspect", str(built), "--html", str(manifest)]), "inside the build")
    notes = tmp_path / "notes.html"
    notes.write_text("<html>my page</html>")
    one_line_error(CliRunner().invoke(cli, ["inspect", str(built), "--html", str(notes)]), "is not a page")
    assert manifest.read_bytes() == kept and notes.read_text() == "<html>my page</html>"
    page = tmp_path / "page.html"
    for _ in range(2):  # its own page it replaces
        assert CliRunner().invoke(cli, ["inspect", str(built), "--html", str(page)]).exit_code == 0
    assert page.read_text().startswith("<!doctype html>")


def test_an_empty_output_option_is_refused_not_ignored(tmp_path, hf_tokenizer):
    recipe = pretrain_recipe(tmp_path, hf_tokenizer, docs=30, output=tmp_path / "out")
    one_line_error(CliRunner().invoke(cli, ["build", str(recipe), "--silent", "--output", ""]), "output is an empty path")
    assert not (tmp_path / "out").exists()


def test_a_build_whose_train_split_is_empty_is_an_error(tmp_path, hf_tokenizer):
    recipe = pretrain_recipe(tmp_path, hf_tokenizer, docs=30, output=tmp_path / "out")
    data = yaml.safe_load(recipe.read_text())
    data["sources"][0]["repeat"] = 0.0001
    recipe.write_text(yaml.safe_dump(data))
    one_line_error(CliRunner().invoke(cli, ["build", str(recipe), "--silent"]),
                   "the train split has no rows: of 26 rows, the sources' weight and repeat kept 0")
    assert not (tmp_path / "out").exists()
