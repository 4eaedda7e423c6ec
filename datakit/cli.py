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


@cli.command()
@click.argument("build_dir", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--split", default=None, help="The split to show rows from (default: train).")
@click.option("--row", "row", type=int, default=None, help="Show this row's tokens and labels.")
@click.option("--sample", type=int, default=None, help="Show K rows picked at random (seeded).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --sample.")
@click.option("--grep", default=None, help="Show the rows whose decoded text contains TEXT.")
@click.option("--limit", type=int, default=5, show_default=True, help="At most this many --grep rows.")
@click.option("--table", is_flag=True, help="One line per token: position, id, label, piece, text.")
@click.option("--no-color", is_flag=True, help="Plain text: trained tokens inside «…», tokens separated by |.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
              help="Write a self-contained HTML page (summary, histograms, the selected rows).")
@handle_errors
def inspect(build_dir, split, row, sample, seed, grep, limit, table, no_color, html_path):
    """Show the summary of a built DIR, or its rows as tokens and labels.

    Example:

        datakit inspect build/alpaca

        datakit inspect build/alpaca --row 3 --split validation --table

        datakit inspect build/chat --sample 3 --html report.html
    """
    from . import inspect as view

    b = view.open_build(build_dir)
    split_name = split or "train"
    rows = None
    if row is not None:
        rows = [row]
    elif sample is not None:
        rows = view.sample_rows(b, split_name, sample, seed=seed)
    elif grep is not None:
        rows = view.grep_rows(b, split_name, grep, limit=limit)
        if not rows:
            click.echo(f"no {split_name} row contains {grep!r}")
    if html_path:
        from .html import write_html

        shown = {split_name: rows} if rows is not None else {n: list(range(min(3, t.num_rows))) for n, t in b.splits.items()}
        click.echo(f"wrote {write_html(b, html_path, shown)}")
        return
    if rows is None:
        click.echo(view.summary_text(b))
        return
    color = not no_color and sys.stdout.isatty()
    for i in rows:
        click.echo(view.row_table(b, split_name, i) if table else view.row_text(b, split_name, i, color=color),
                   color=color)
        click.echo()


def main():  # pragma: no cover - console entry
    cli()
