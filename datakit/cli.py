"""The command line: a thin layer over the library. Each command calls one library function."""
from __future__ import annotations

import functools
import signal
import sys

import click

from . import __version__, _stop_quietly
from .errors import DatakitError
from .train.options import cli_options as train_options  # light: dataclasses only, no torch



def handle_errors(fn):
    """Turn a DatakitError, an OSError or Ctrl-C into one clean line and exit code 1;
    ``--debug`` shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args, debug: bool = False, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DatakitError as e:
            if debug:
                raise
            raise click.ClickException(e.cli_message()) from None
        except OSError as e:
            if debug:
                raise
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"{where}{e.strerror or e} (--debug shows where)") from None
        except KeyboardInterrupt as e:
            if debug:
                raise
            click.echo(str(e) if str(e).startswith("interrupted") else "interrupted", err=True)
            sys.exit(1)

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
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where the steps run: this process, or a Ray cluster (pip install 'datakit[ray]').")
@click.option("--address", default=None, envvar="RAY_ADDRESS",
              help="The Ray cluster to join (default: RAY_ADDRESS, else a local one for the build).")
@click.option("--no-cache", is_flag=True, help="Tokenize every source; neither read nor write the cache.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="The tokenized-rows cache folder (default: $DATAKIT_CACHE_DIR, else ~/.cache/datakit).")
@click.option("--cache-size", default=None,
              help="Keep the cache under this size, dropping least recently used entries (default: 20GB).")
@silent_option
@handle_errors
def build(recipe, output, overwrite, engine, address, no_cache, cache_dir, cache_size, silent):
    """Build the dataset a RECIPE describes.

    Example:

        datakit build recipes/pretrain.yaml --overwrite
        datakit build recipes/pretrain.yaml --engine ray --address ray://head:10001
    """
    from .builder import run_build
    from .engines import make_engine
    from .summary import build_summary

    options = {"address": address} if engine == "ray" else {}
    result = run_build(recipe, output=output, overwrite=overwrite, silent=silent,
                       engine=make_engine(engine, **options) if options else engine, cache=not no_cache,
                       cache_dir=cache_dir, cache_size=cache_size)
    if not silent:
        click.echo(build_summary(result))


@cli.group()
def cache():
    """The tokenized-rows cache: sources already tokenized are not tokenized again.

    Example:

        datakit cache info

        datakit cache clear --cache-dir /data/dk-cache
    """


def cache_dir_option(fn):
    return click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                        help="The cache folder (default: $DATAKIT_CACHE_DIR, else ~/.cache/datakit).")(fn)


@cache.command("info")
@cache_dir_option
@handle_errors
def cache_info(cache_dir):
    """Where the cache is, its entries and their size.

    Example:

        datakit cache info
    """
    from .cache import Cache, human_size

    info = Cache(cache_dir).info()
    click.echo(f"location: {info['location']}")
    click.echo(f"entries:  {info['entries']}")
    click.echo(f"size:     {human_size(info['bytes'])} (limit {human_size(info['max_bytes'])})")


@cache.command("clear")
@cache_dir_option
@handle_errors
def cache_clear(cache_dir):
    """Remove every entry of the cache.

    Example:

        datakit cache clear
    """
    from .cache import Cache, human_size

    removed = Cache(cache_dir).clear()
    click.echo(f"removed {removed['entries']} entries ({human_size(removed['bytes'])}) from {removed['location']}")


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@handle_errors
def validate(recipe):
    """Check a RECIPE against the schema, and that its inputs, tokenizer and templates exist;
    report every problem at once.

    Example:

        datakit validate recipes/alpaca.yaml
    """
    from .recipe_files import validate_recipe

    r, notes = validate_recipe(recipe)
    kind = "sft" if r.is_sft else "pretrain"
    click.echo(f"{recipe}: ok ({kind}; {len(r.sources)} source(s); steps: "
               f"{', '.join(s.name for s in r.transforms)})")
    for note in notes:
        click.echo(f"note: {note}")


@cli.command()
@click.argument("build_dir", metavar="DIR")
@click.option("--split", default=None, help="The split to show rows from (default: train).")
@click.option("--row", "row", type=int, default=None, help="Show this row's tokens and labels.")
@click.option("--sample", type=int, default=None, help="Show K rows picked at random (seeded).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --sample.")
@click.option("--grep", default=None, help="Show the rows whose decoded text contains TEXT.")
@click.option("--limit", type=int, default=5, show_default=True, help="At most this many --grep rows.")
@click.option("--table", is_flag=True, help="One line per token: position, id, label, piece, text.")
@click.option("--no-color", is_flag=True, help="Plain text: trained tokens inside «…», tokens separated by |.")
@click.option("--turns", is_flag=True, help="Each row turn by turn: role, tokens, trained tokens; counts per role.")
@click.option("--html", "html_path", default=None,
              help="Write a self-contained HTML page (summary, histograms, the selected rows).")
@handle_errors
def inspect(build_dir, split, row, sample, seed, grep, limit, table, no_color, turns, html_path):
    """Show the summary of a built DIR, or its rows as tokens and labels, and where each row
    came from (input file and line, or source build and row).

    Example:

        datakit inspect build/alpaca

        datakit inspect build/alpaca --row 3 --split validation --table

        datakit inspect build/chat --sample 3 --html report.html

        datakit inspect build/chat --row 0 --turns
    """
    from . import inspect as view
    from .inspect_provenance import provenance_lines
    from .train.plot import curve_text, is_training_output

    if is_training_output(build_dir):  # a `datakit train` output folder: the loss curve's numbers
        click.echo(curve_text(build_dir))
        return
    if sample is not None and sample < 1:
        raise click.ClickException(f"--sample needs at least 1 row (got {sample})")
    if html_path:
        from .html import checked_path

        checked_path(html_path, build_dir)
    b = view.open_build(build_dir)
    split_name = split or "train"
    if split is not None:
        b.table(split)  # an unknown split is an error, also when only the summary is shown
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
        if turns:
            from .inspect_turns import turns_text

            click.echo(turns_text(b, split_name, i, color=color), color=color)
        else:
            click.echo(view.row_table(b, split_name, i) if table else view.row_text(b, split_name, i, color=color),
                       color=color)
        if not table:  # the table stays one line per token
            click.echo("\n".join(provenance_lines(b, split_name, i)))
        click.echo()


@cli.command()
@click.argument("recipe", required=False, type=click.Path(dir_okay=False))
@click.option("--data", type=click.Path(file_okay=False), help="A built folder (default: the recipe's output).")
@click.option("--resume-from-checkpoint", is_flag=False, flag_value="latest", default=None,
              help="Resume from PATH, or from the latest checkpoint in the output folder when no PATH is given.")
@train_options()
@silent_option
@handle_errors
def train(recipe, data, resume_from_checkpoint, silent, **options):
    """Fine-tune a model (LoRA, QLoRA or full) on a built folder; needs `pip install 'datakit[train]'`.

    Every option can also be set in the recipe's `train:` section; a flag wins over the recipe.

    Example:

        datakit train --data build/alpaca --model path/to/llama --max-steps 200

        datakit train recipes/alpaca.yaml --micro-batch-size 8 --lora-target-modules all-linear --merge
    """
    from .train import config_from, train as run_train
    from .train.options import parse_target_modules

    if options.get("lora_target_modules"):
        options["lora_target_modules"] = parse_target_modules(options["lora_target_modules"])
    config, recipe_data = config_from(recipe, options)
    data = data or recipe_data
    if not data or not config.base_model:
        raise click.UsageError("give --data DIR and --model MODEL (or a RECIPE with output and train.base_model)")
    resume = True if resume_from_checkpoint == "latest" else resume_from_checkpoint
    result = run_train(data, config=config, resume_from_checkpoint=resume, silent=silent)
    if not silent:
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.metrics.items()}
        what = "model" if config.finetune == "full" else "LoRA adapter"
        click.echo(f"saved the {what} to {result.output_dir} (curve: {result.output_dir / 'loss.png'}): {shown}")
        if result.merged_dir:
            click.echo(f"merged model: {result.merged_dir}")


@cli.command()
@click.argument("adapter_dir", metavar="ADAPTER_DIR", type=click.Path(file_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False),
              help="A new folder for the merged model, its tokenizer and chat template.")
@click.option("--model", "base_model", default=None,
              help="The base model (default: the one the adapter was trained from).")
@click.option("--trust-remote-code", is_flag=True, help="Let the model folder run its own Python code.")
@silent_option
@handle_errors
def merge(adapter_dir, output, base_model, trust_remote_code, silent):
    """Fold a LoRA adapter into its base model, ready for vLLM or `from_pretrained`.

    Example:

        datakit merge build/alpaca-lora --output build/alpaca-merged
    """
    from .train import merge as run_merge
    from .train.quiet import silenced

    with silenced(silent):
        out = run_merge(adapter_dir, output=output, base_model=base_model, trust_remote_code=trust_remote_code)
    if not silent:
        click.echo(f"wrote the merged model to {out}")


def main() -> None:
    """The ``datakit`` console script."""
    try:
        if signal.getsignal(signal.SIGINT) is _stop_quietly:  # loaded (see ``datakit._guard_cli_start``):
            signal.signal(signal.SIGINT, signal.default_int_handler)  # from here Ctrl-C is a KeyboardInterrupt
        _main()
    except KeyboardInterrupt:  # before a command's own handler runs: loading, parsing the arguments
        _stop_quietly(signal.SIGINT, None)


def _main() -> None:
    from . import startup

    command = sys.argv[1] if len(sys.argv) > 1 else None
    startup.prepare(command)
    if command != "build":
        cli(prog_name="datakit")
        return
    try:
        cli(prog_name="datakit")
    except SystemExit as e:
        startup.finish(e.code)
    startup.finish(0)
