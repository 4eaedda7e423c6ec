"""The command line: a thin layer over the library. Each command calls one library function."""
from __future__ import annotations

import functools
import sys

import click

from . import __version__
from .errors import DatakitError


def handle_errors(fn):
    """Turn DatakitError into one clean line and exit code 1; ``--debug`` shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args, debug: bool = False, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DatakitError as e:
            if debug:
                raise
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            if debug:
                raise
            click.echo("interrupted; earlier output is untouched", err=True)
            sys.exit(130)

    return click.option("--debug", is_flag=True, help="Show the full traceback on errors.")(wrapper)


def silent_option(fn):
    return click.option("--silent", is_flag=True, help="No progress bar and no summary.")(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="datakit")
def cli():
    """datakit: build exact, inspectable, reproducible datasets for LLM training."""


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--output", "-o", type=click.Path(file_okay=False), help="Write here instead of the recipe's `output`.")
@click.option("--overwrite", is_flag=True, help="Replace an existing build at the output folder.")
@silent_option
@handle_errors
def build(recipe, output, overwrite, silent):
    """Build the dataset a RECIPE describes.

    Example:

        datakit build recipes/pretrain.yaml --overwrite
    """
    from .build import run_build
    from .summary import build_summary

    result = run_build(recipe, output=output, overwrite=overwrite, silent=silent)
    if not silent:
        click.echo(build_summary(result))


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@handle_errors
def validate(recipe):
    """Check a RECIPE against the schema and report every problem at once.

    Example:

        datakit validate recipes/alpaca.yaml
    """
    from .recipe import load_recipe

    r = load_recipe(recipe)
    kind = "sft" if r.is_sft else "pretrain"
    click.echo(f"{recipe}: ok ({kind}; {len(r.sources)} source(s); steps: "
               f"{', '.join(s.name for s in r.transforms)})")


def main():  # pragma: no cover - console entry
    cli()
