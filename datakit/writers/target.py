"""What datakit may replace: checks made on the output folder (and on side files such as a
filter's rejects) before any work starts.

A folder is a datakit build only if its ``manifest.json`` says so (a ``datakit_version`` key) and
every entry in it is one the manifest accounts for (``layout``, or for builds that predate that key
``dataset_dict.json`` and the split folders). Anything else, or a folder that holds the recipe,
an input or the tokenizer, is never replaced, whatever the options.
"""
from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import OutputError

from .manifest import MANIFEST


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(str(path)))))


def read_build_manifest(folder: Path) -> tuple[dict | None, str | None]:
    """``(manifest, None)`` when ``folder`` is a datakit build, else ``(None, why not)``."""
    path = folder / MANIFEST
    if not path.is_file():
        return None, f"no {MANIFEST}"
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return None, f"{MANIFEST} is not readable JSON ({type(e).__name__})"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("datakit_version"), str):
        return None, f"its {MANIFEST} was not written by datakit (no datakit_version)"
    return manifest, None


def build_layout(manifest: dict) -> set[str]:
    """The names a build's folder may hold: its manifest's ``layout`` (what the stage held when
    it was swapped in), or for builds that predate that key, ``dataset_dict.json`` and the splits."""
    layout = manifest.get("layout")
    if isinstance(layout, list):
        return {str(name) for name in layout} | {MANIFEST}
    splits = manifest.get("splits")
    return {MANIFEST, "dataset_dict.json"} | (set(splits) if isinstance(splits, dict) else set())


def not_a_build(folder: Path) -> str | None:
    """Why ``folder`` (an existing folder) is not a datakit build, or None when it is one."""
    manifest, why = read_build_manifest(folder)
    if manifest is None:
        return why
    extra = sorted(set(os.listdir(folder)) - build_layout(manifest))
    if not extra:
        extra = _unrecorded(folder, manifest)
    if extra:
        shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        return f"it holds entries the build did not write: {shown}"
    return None


def _unrecorded(folder: Path, manifest: dict) -> list[str]:
    """Files inside the build's folders that its manifest does not list (a user's notes put into
    ``train/``...). A manifest from before per-file records lists none: nothing to compare."""
    formats = manifest.get("formats")
    if not isinstance(formats, dict):
        return []
    written = {"manifest.json"}
    for fmt in formats.values():
        for f in (fmt.get("files") or []) if isinstance(fmt, dict) else []:
            if isinstance(f, dict) and isinstance(f.get("path"), str):
                written.add(f["path"])
    for entry in (manifest.get("provenance") or {}).values():
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            written.add(entry["path"])
    folders = {p.as_posix() for w in written for p in Path(w).parents}
    found = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        found += [(rel / f).as_posix() for f in files if (rel / f).as_posix() not in written]
        found += [(rel / d).as_posix() + "/" for d in dirs
                  if (Path(root) / d).is_symlink() or (rel / d).as_posix() not in folders]
        dirs[:] = [d for d in dirs if (rel / d).as_posix() in folders]  # an unknown folder is named once
    return sorted(found)


def _containing(folder: Path, protect: Iterable[tuple[str, str | Path]]) -> str | None:
    """The first protected path (``(what, path)``) that is ``folder`` or lies inside it."""
    for what, path in protect:
        p = _real(path)
        if p == folder or folder in p.parents:
            return f"{what} {path}"
    return None


def check_target(target: str | Path, *, overwrite: bool,
                 protect: Iterable[tuple[str, str | Path]] = ()) -> Path:
    """Refuse, before any work, an output folder datakit must not replace; return its real path.

    ``protect`` lists ``(what, path)`` pairs (the recipe, inputs, the tokenizer...) that the
    output may neither be nor contain. A symbolic link to a folder is followed: the build replaces
    the folder it points to and the link stays. A mount point cannot be replaced by a rename, so
    it is refused; a folder inside it can be the output.
    """
    given = Path(target)
    if given.is_symlink() and not given.exists():
        raise OutputError(f"{given} is a symbolic link to {os.readlink(given)}, which does not exist")
    real = _real(given)
    inside = _containing(real, [*protect, ("the current folder", Path.cwd())])
    if inside:
        raise OutputError(f"{given} holds {inside}; a build replaces its whole output folder, "
                          f"so the output must be a folder of its own")
    if os.path.ismount(real):
        raise OutputError(f"{given} is a mount point, which a build cannot replace (it renames a finished "
                          f"folder into place); write to a folder inside it, such as {given / 'build'}")
    if not real.exists():
        return real
    if not real.is_dir():
        raise OutputError(f"{given} exists and is not a folder")
    if not any(real.iterdir()):
        return real
    why = not_a_build(real)
    if why:
        raise OutputError(f"{given} exists and is not a datakit build ({why}); datakit replaces only "
                          f"folders it built")
    if not overwrite:
        raise OutputError(f"{given} exists and is a datakit build; pass overwrite=True to replace it",
                          option="overwrite")
    return real


def check_side_file(path: str | Path, *, what: str, output: Path,
                    protect: Iterable[tuple[str, str | Path]] = ()) -> Path:
    """Refuse, before any work, a file a build writes beside its output (``what``: e.g. "rejects")
    when it is an input, the recipe, a folder, or lies inside the output folder; return its real path."""
    given = Path(path)
    real = _real(given)
    out = _real(output)
    if real == out or out in real.parents:
        raise OutputError(f"{what} file {given} is inside the output folder {output}, which the build "
                          f"replaces; put it beside the output instead")
    for name, p in protect:
        q = _real(p)
        pattern = any(ch in str(p) for ch in "*?[")
        if real == q or (q.is_dir() and q in real.parents) or (
                pattern and fnmatch.fnmatchcase(str(real), os.path.abspath(str(p)))):
            raise OutputError(f"{what} file {given} would overwrite or be read as {name} {p}")
    if real.is_dir():
        raise OutputError(f"{what} file {given} is a folder; name a file")
    if real.exists() and not _is_rejects_file(real):
        raise OutputError(f"{what} file {given} exists and is not a rejects file datakit wrote (JSON lines "
                          f"with where, reason and row); datakit replaces only files it wrote")
    parent = real.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{what} file {given}: {parent} is not a folder")
    return real


def _is_rejects_file(path: Path) -> bool:
    """Whether ``path`` is a file a filter's ``rejects`` wrote: empty, or JSON lines whose first
    record has exactly the keys where, reason and row."""
    try:
        if not path.is_file():
            return False
        with open(path, "rb") as f:
            first = f.readline(1 << 20)
    except OSError:
        return False
    if not first:
        return True
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and set(record) == {"where", "reason", "row"}


def recipe_paths(recipe) -> list[tuple[str, str | Path]]:
    """The ``(what, path)`` pairs a build reads (recipe, inputs, tokenizer, templates): the output
    may not hold them, and a rejects file may not be one of them."""
    from ..sources import expand

    found: list[tuple[str, str | Path]] = []
    if recipe.path:
        found.append(("the recipe", recipe.path))
    for source in recipe.sources:
        found.append(("the input", source.path))
        try:
            found.extend(("the input", p) for p in expand(source.path))
        except Exception:  # a missing input is reported by the read, with its own message
            pass
    for what, path in (("the tokenizer", recipe.tokenizer), ("the chat template", recipe.chat_template),
                       *(("the template", s.options.name) for s in recipe.transforms if s.name == "template")):
        if path and os.path.lexists(os.path.expanduser(str(path))):
            found.append((what, path))
    return found


def check_build_paths(recipe, target: str | Path, *, overwrite: bool) -> list[tuple[str, str | Path]]:
    """All the path checks a build makes before any work: the output (``check_target``) and every
    ``filter.rejects`` file (``check_side_file``). Returns the protected paths for ``staged_output``."""
    protect = recipe_paths(recipe)
    check_target(target, overwrite=overwrite, protect=protect)
    rejects = [s.options.rejects for s in recipe.transforms if s.name == "filter" and s.options.rejects]
    for path in rejects:
        check_side_file(path, what="rejects", output=Path(target), protect=protect)
    return protect + [("the rejects file", p) for p in rejects]
