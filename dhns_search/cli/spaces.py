"""``dhns-search spaces validate | show``: check and show search spaces."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from dhns_search.cli._app import app, cli_errors, console, path_value

spaces_app = typer.Typer(help="Check and show search spaces (spaces/*.yaml).", no_args_is_help=True)
app.add_typer(spaces_app, name="spaces")


@spaces_app.command("validate")
@cli_errors
def spaces_validate(
    files: Annotated[list[Path], typer.Argument(help="Space files.", show_default=False, parser=path_value)],
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", "-s", help="Dotted overrides to check with base + fixed.")] = None,
) -> None:
    """Validate space files (schema, paths, bounds, conditions, base + fixed)."""
    from dhns_search.search.space import load_space

    for f in files:
        space = load_space(f, overrides=list(overrides or []))
        n_cond = sum(1 for p in space.params if p.when)
        console.print(f"[green]ok[/] {f}: {len(space.params)} parameters ({n_cond} conditional), "
                      f"base {space.base_name or 'defaults'}, {len(space.fixed)} fixed", highlight=False)


@spaces_app.command("show")
@cli_errors
def spaces_show(file: Annotated[Path, typer.Argument(help="Space file.", show_default=False, parser=path_value)]) -> None:
    """Show a space's parameters in sampling order."""
    from dhns_search.search.space import format_value, load_space

    space = load_space(file)
    if space.description:
        console.print(space.description.strip(), highlight=False)
    console.print(f"base: {space.base_name or 'defaults'}", highlight=False)
    if space.fixed:
        console.print("fixed: " + ", ".join(f"{k}={format_value(v)}" for k, v in space.fixed.items()),
                      highlight=False)
    table = Table(title=f"{file}: {len(space.params)} parameters in sampling order", title_justify="left")
    table.add_column("parameter", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("range / choices", overflow="fold")
    table.add_column("when", overflow="fold")
    for p in space.params:
        when = ", ".join(f"{k} in {{{' | '.join(format_value(v) for v in vals)}}}" for k, vals in p.when.items())
        rng = Text(p.describe_range())
        if p.spec.description:
            rng.append("\n" + p.spec.description.strip(), style="dim")
        table.add_row(p.name, "bundle" if p.is_bundle else p.spec.type, rng, when)
    console.print(table)
    for p in space.params:
        if not p.is_bundle:
            continue
        console.print(f"bundle [bold]{p.name}[/] sets {', '.join(p.targets)}:", highlight=False)
        for label, values in p.spec.choices.items():  # type: ignore[union-attr]
            console.print(f"  {label}: " + "  ".join(f"{k}={format_value(v)}" for k, v in values.items()),
                          highlight=False, soft_wrap=True)
