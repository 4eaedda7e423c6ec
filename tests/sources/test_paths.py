"""Which files a source reads: hidden entries skipped, symlink loops not followed, each file once."""
import glob
import json
import os

import pytest

from datakit.errors import SourceError
from datakit.sources import expand


def rel(paths, root):
    return [os.path.relpath(p, root) for p in paths]


@pytest.fixture
def tree(tmp_path):
    """data/ with a notebook checkpoint copy, a hidden file, a nested folder, a symlink loop and
    a second link to a file, as a real project folder has them."""
    d = tmp_path / "data"
    (d / "sub").mkdir(parents=True)
    (d / ".ipynb_checkpoints").mkdir()
    for name in ("a.jsonl", "sub/b.jsonl", ".ipynb_checkpoints/a-checkpoint.jsonl", ".hidden.jsonl"):
        (d / name).write_text(json.dumps({"text": name}) + "\n")
    (d / "notes.bin").write_bytes(b"\0")
    os.symlink(".", d / "loop")
    os.symlink("..", d / "sub" / "up")
    os.symlink("a.jsonl", d / "z_link.jsonl")
    return d


def test_a_folder_skips_hidden_entries_loops_and_second_paths(tree):
    assert rel(expand(str(tree)), tree) == ["a.jsonl", "sub/b.jsonl"]


@pytest.mark.parametrize("pattern, expected", [
    ("**/*.jsonl", ["a.jsonl", "sub/b.jsonl"]),
    ("*.jsonl", ["a.jsonl"]),
    ("sub/*", ["sub/b.jsonl"]),
    ("**", ["a.jsonl", "sub/b.jsonl"]),
    (".ipynb_checkpoints/*.jsonl", [".ipynb_checkpoints/a-checkpoint.jsonl"]),  # named: read
    (".*.jsonl", [".hidden.jsonl"]),
    ("s?b/[ab].jsonl", ["sub/b.jsonl"]),
])
def test_globs_match_as_glob_does_without_loops(tree, pattern, expected):
    assert rel(expand(str(tree / pattern)), tree) == expected


@pytest.mark.parametrize("pattern", ["**/*.jsonl", "*.jsonl", "*/*.jsonl", "**", "*/[ab]*"])
def test_globs_agree_with_glob_on_a_tree_without_links(tmp_path, pattern):
    """The reference is the standard library's glob.glob(recursive=True), on a tree it walks safely."""
    for name in ("a.jsonl", "b.txt", "x/c.jsonl", "x/y/d.jsonl", "x/y/e.csv", "w/a.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}\n")
    ours = rel(expand(str(tmp_path / pattern)), tmp_path)
    ref = sorted(os.path.relpath(p, tmp_path) for p in glob.glob(str(tmp_path / pattern), recursive=True)
                 if os.path.isfile(p))
    assert ours == ref


def test_a_symlinked_folder_outside_is_followed_once(tmp_path):
    real = tmp_path / "store"
    real.mkdir()
    (real / "r.jsonl").write_text("{}\n")
    d = tmp_path / "data"
    d.mkdir()
    os.symlink(real, d / "linked")
    os.symlink(real, d / "linked_again")
    assert rel(expand(str(d)), d) == ["linked/r.jsonl"]


def test_many_loops_stay_linear(tmp_path):
    """Two links back to the root: glob.glob walks 2^depth paths; the walk here sees each folder once."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "f.txt").write_text("x")
    for name in ("l1", "l2", "l3"):
        os.symlink(".", d / name)
    assert rel(expand(str(d / "**" / "*.txt")), d) == ["f.txt"]


def test_a_saved_dataset_inside_a_folder_is_one_input(tmp_path):
    from datasets import Dataset

    d = tmp_path / "data"
    d.mkdir()
    (d / "a.jsonl").write_text('{"text": "x"}\n')
    Dataset.from_dict({"text": ["y"]}).save_to_disk(str(d / "saved"))
    assert rel(expand(str(d)), d) == ["a.jsonl", "saved"]


def test_a_folder_with_only_hidden_files_is_empty(tmp_path):
    (tmp_path / ".a.jsonl").write_text("{}\n")
    with pytest.raises(SourceError, match="folder holds no readable files"):
        expand(str(tmp_path))
