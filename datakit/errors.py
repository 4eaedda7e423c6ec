"""Typed errors. Each one says where (file:line, row, field) and what to do; the CLI prints one line."""
from __future__ import annotations


class DatakitError(Exception):
    """Base class of every error datakit raises on purpose.

    A message names no command-line flag. When a keyword argument of the library call fixes the
    problem, the message says ``NAME=True`` and ``option`` is ``NAME``; the CLI shows its flag.
    """

    option: str | None = None

    def cli_message(self) -> str:
        """The message with ``option=True`` written as the flag ``--option``."""
        text = str(self)
        if self.option:
            text = text.replace(f"{self.option}=True", "--" + self.option.replace("_", "-"))
        return text


class RecipeError(DatakitError):
    """The recipe is missing, unparsable or invalid. ``problems`` lists every issue found."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = list(problems)
        joined = "; ".join(self.problems)
        super().__init__(f"{path}: {joined}")


class SourceError(DatakitError):
    """An input file cannot be read or a record in it is malformed."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.file, self.line, self.field = file, line, field
        where = ""
        if file is not None:
            where = f"{file}:{line}" if line is not None else str(file)
        if field is not None:
            where = f"{where}: field '{field}'" if where else f"field '{field}'"
        super().__init__(f"{where}: {message}" if where else message)


class TokenizerError(DatakitError):
    """The tokenizer cannot be loaded or lacks something the recipe needs (EOS, offsets...)."""


class TemplateError(DatakitError):
    """A prompt or chat template cannot be loaded or rendered, or a mask check failed."""


class OutputError(DatakitError):
    """The output cannot be written: it exists (and ``overwrite`` is off), is not a datakit build,
    holds the recipe or an input, is a mount point, is read-only, or the disk is full."""

    def __init__(self, message: str, *, option: str | None = None):
        super().__init__(message)
        self.option = option


class ColumnError(DatakitError):
    """Rows handed from one stage to the next lack a column the next relies on (a custom step
    that dropped ``_source`` or ``_group``, or a datakit bug)."""


class SplitError(DatakitError):
    """The split cannot be made as the recipe asks (more validation rows than the build has)."""


class EmptyBuildError(DatakitError):
    """Every document or row was dropped: there is nothing to write."""


class StepError(DatakitError):
    """A step cannot run on the rows it is given (a field the recipe names is not a column)."""


class BuildNotFoundError(DatakitError):
    """A folder given as a datakit build is not one, or a file of it is missing or damaged."""


class InspectError(DatakitError):
    """``inspect`` was asked for a split, row or view that the build cannot give."""


class TrainError(DatakitError):
    """The trainer cannot run on the given data or model."""


class EngineError(DatakitError):
    """The engine cannot run: Ray is missing or its cluster cannot be reached."""
