"""What may be replaced: only a datakit build (by its manifest and layout), never a folder that holds
the recipe, an input or the current folder, never a file; symlinks followed, mount points refused."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from datakit.errors import OutputError
from datakit.writers.atomic import staged_output

from .builds import leftovers, minimal_build, new_build, tag_of, tree, write_build

# ---------------------------------------------------------------- what counts as a build

def test_success_replaces_and_failure_keeps(tmp_path):
    target = tmp_path / "out"
    write_build(target, "old")
    with pytest.raises(RuntimeError):
        with staged_output(target, overwrite=True) as stage:
            (stage / "half").write_text("x")
            raise RuntimeError("boom")
    assert tag_of(target) == "old" and leftovers(tmp_path) == []
    new_build(target)
    assert tag_of(target) == "new" and leftovers(tmp_path) == []
    assert json.loads((target / "manifest.json").read_text())["layout"] == ["dataset_dict.json", "manifest.json",
                                                                          "train"]


def _foreign_manifest(d):
    (d / "manifest.json").write_text('{"name": "my-web-app", "version": "1.0"}')


def _corrupt_manifest(d):
    (d / "manifest.json").write_text('{"datakit_version": ')


def _build_plus_a_file(d):
    write_build(d, "old")
    (d / "notes.txt").write_text("mine")


def _no_manifest(d):
    (d / "thesis.tex").write_text("years of work")


def _manifest_is_a_list(d):
    (d / "manifest.json").write_text('["datakit_version"]')


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("make, why", [
    (_foreign_manifest, "no datakit_version"), (_corrupt_manifest, "not readable JSON"),
    (_build_plus_a_file, "notes.txt"), (_no_manifest, "no manifest.json"),
    (_manifest_is_a_list, "no datakit_version")])
def test_a_folder_that_is_not_a_build_is_never_replaced(tmp_path, make, why, overwrite):
    target = tmp_path / "out"
    target.mkdir()
    make(target)
    before = tree(target)
    with pytest.raises(OutputError, match=why):
        minimal_build(target, overwrite)
    assert tree(target) == before and leftovers(tmp_path) == []


def test_an_existing_build_needs_overwrite_and_the_message_names_no_flag(tmp_path):
    target = tmp_path / "out"
    write_build(target, "old")
    with pytest.raises(OutputError) as e:
        minimal_build(target, False)
    assert e.value.option == "overwrite" and "overwrite=True" in str(e.value) and "--" not in str(e.value)
    assert "--overwrite" in e.value.cli_message()
    assert tag_of(target) == "old"


def test_an_empty_folder_or_a_missing_one_is_built_without_overwrite(tmp_path):
    (tmp_path / "empty").mkdir()
    minimal_build(tmp_path / "empty", False)
    minimal_build(tmp_path / "a" / "b", False)
    assert (tmp_path / "empty" / "manifest.json").exists() and (tmp_path / "a" / "b" / "manifest.json").exists()


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("where", ["output", "output/data/in.jsonl", "output/deep/er/recipe.yaml"])
def test_the_output_never_holds_a_protected_path(tmp_path, where, overwrite):
    target = tmp_path / "output"
    write_build(target, "old")
    held = tmp_path / where
    protect = [("the input", held)]
    with pytest.raises(OutputError, match="holds the input"):
        with staged_output(target, overwrite=overwrite, protect=protect):
            pass
    assert tag_of(target) == "old"


def test_the_output_is_not_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match="current folder"):
        minimal_build(Path("."), True)
    with pytest.raises(OutputError, match="current folder"):
        minimal_build(tmp_path.parent, True)


def test_a_file_is_not_an_output(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(OutputError, match="not a folder"):
        minimal_build(tmp_path / "out", True)
    assert (tmp_path / "out").read_text() == "a file"


# ---------------------------------------------------------------- symlinks and mount points

def test_a_symlinked_output_replaces_the_folder_it_points_to(tmp_path):
    real = tmp_path / "disk" / "build"
    write_build(real, "old")
    link = tmp_path / "out"
    link.symlink_to(real)
    new_build(link)
    assert link.is_symlink() and tag_of(real) == "new"
    assert sorted(p.name for p in real.parent.iterdir()) == ["build"] and leftovers(tmp_path) == []


def test_a_dangling_symlink_is_refused(tmp_path):
    (tmp_path / "out").symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputError, match="does not exist"):
        minimal_build(tmp_path / "out", True)


def test_a_mount_point_is_refused_before_any_work(tmp_path, monkeypatch):
    target = tmp_path / "out"
    write_build(target, "old")
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: str(p) == str(target) or real_ismount(p))
    entered = []
    with pytest.raises(OutputError, match="mount point"):
        with staged_output(target, overwrite=True):
            entered.append(1)
    assert not entered and tag_of(target) == "old"
