"""Small stand-in builds for the output tests: a build's layout with a tagged manifest, and how
to tell a complete old or new one from anything else."""
from __future__ import annotations

import json
from pathlib import Path

from datakit.writers.atomic import staged_output


def write_build(folder: Path, tag: str, *, files: int = 2) -> None:
    """A small folder with a build's layout, its manifest tagged ``tag``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train").mkdir()
    for i in range(files):
        (folder / "train" / f"data-{i}.arrow").write_text(f"{tag} {i}")
    (folder / "dataset_dict.json").write_text('{"splits": ["train"]}')
    (folder / "manifest.json").write_text(json.dumps({"datakit_version": "0.1.0", "tag": tag,
                                                      "splits": {"train": {}}}))


def tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def tag_of(folder: Path) -> str | None:
    """``old``/``new`` when ``folder`` holds that complete build, else None."""
    if not folder.is_dir():
        return None
    files = tree(folder)
    manifest = json.loads(files.pop("manifest.json", "{}"))
    tag = manifest.get("tag")
    expected = {f"train/data-{i}.arrow": f"{tag} {i}" for i in range(len(files) - 1)}
    expected["dataset_dict.json"] = '{"splits": ["train"]}'
    return tag if files == expected else None


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".out."))


def new_build(target: Path, **kw) -> None:
    """A build tagged ``new`` (3 data files) staged and swapped into ``target``."""
    with staged_output(target, overwrite=True, **kw) as stage:
        write_build(stage, "new", files=3)


def minimal_build(target: Path, overwrite: bool) -> None:
    """The smallest build datakit recognizes (a manifest with its version) staged into ``target``."""
    with staged_output(target, overwrite=overwrite) as stage:
        (stage / "manifest.json").write_text('{"datakit_version": "0.1.0"}')
