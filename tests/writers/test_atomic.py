"""Atomic output: failures and interruptions leave earlier output intact and nothing half-written."""
import signal
import subprocess
import sys
import time

import pytest

from datakit.errors import OutputError
from datakit.writers.atomic import staged_output


def test_success_replaces_and_failure_keeps(tmp_path):
    target = tmp_path / "out"
    with staged_output(target, overwrite=False) as stage:
        (stage / "manifest.json").write_text("{}")
        (stage / "a").write_text("first")
    with pytest.raises(RuntimeError):
        with staged_output(target, overwrite=True) as stage:
            (stage / "manifest.json").write_text("{}")
            (stage / "a").write_text("second")
            raise RuntimeError("boom")
    assert (target / "a").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_refuses_to_replace_a_folder_that_is_not_a_build(tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputError, match="not a datakit build"):
        with staged_output(target, overwrite=True):
            pass
    assert (target / "thesis.tex").exists()


def test_a_stale_staging_folder_of_a_dead_process_is_removed(tmp_path):
    target = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.tmp-{dead.pid}-deadbeef"
    stale.mkdir()
    (stale / "half.arrow").write_bytes(b"x" * 10)
    with staged_output(target, overwrite=False) as stage:
        (stage / "manifest.json").write_text("{}")
    assert not stale.exists() and (target / "manifest.json").exists()


def test_sigterm_mid_build_cleans_up(tmp_path, hf_tokenizer):
    import yaml

    src = tmp_path / "big.jsonl"
    with open(src, "w") as f:
        for i in range(200_000):
            f.write('{"text": "document %d with a few words in it"}\n' % i)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"tokenizer": str(hf_tokenizer), "sources": [{"path": str(src)}],
                                      "transforms": [{"tokenize": {}}, {"pack": {"block_size": 16}}],
                                      "output": str(tmp_path / "out")}))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.json").write_text('{"earlier": true}')
    proc = subprocess.Popen([sys.executable, "-m", "datakit", "build", str(recipe), "--overwrite", "--silent"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".out.tmp-*")):
        time.sleep(0.05)
    assert list(tmp_path.glob(".out.tmp-*")), "the build never started staging"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert (tmp_path / "out" / "manifest.json").read_text() == '{"earlier": true}'
    assert not list(tmp_path.glob(".out.tmp-*"))
