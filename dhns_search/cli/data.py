"""``dhns-search data info | check | synth`` and ``dhns-search features text``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from dhns_search.cli._app import app, cli_errors, console, echo_err, err_console, path_value
from dhns_search.config.io import validate_model
from dhns_search.config.models import SynthConfig
from dhns_search.errors import DataError

if TYPE_CHECKING:
    from dhns_search.data.stats import DatasetSummary

data_app = typer.Typer(help="Inspect, check and synthesise datasets.", no_args_is_help=True)
features_app = typer.Typer(help="Make modality feature tables.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")

_D = SynthConfig()  # option defaults come from the configuration model

DatasetDir = Annotated[
    Path, typer.Argument(help="Dataset directory in the OpenKE layout.", show_default=False, parser=path_value)
]


def _short_source(source: str | None, root: str | None) -> str:
    if source is None:
        return "placeholder (all rows missing)"
    if root is not None:
        try:
            return str(Path(source).relative_to(root))
        except ValueError:
            pass
    return source


def render_summary(summary: DatasetSummary) -> None:
    """Print a dataset summary as rich tables."""
    from dhns_search.data.stats import CATEGORY_NAMES

    table = Table(title=f"dataset {summary.name}", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("path", summary.root or "-")
    table.add_row("entities", f"{summary.num_entities:,}")
    table.add_row("relations", f"{summary.num_relations:,}")
    sizes = summary.split_sizes
    table.add_row("train / valid / test", f"{sizes['train']:,} / {sizes['valid']:,} / {sizes['test']:,}")
    categories = "\n".join(
        f"{c}: {summary.categories[c]:>3} relations, {summary.category_triples[c]:>7,} triples"
        for c in CATEGORY_NAMES
    )
    table.add_row("relation categories", categories)
    table.add_row("fingerprint", summary.fingerprint[:16])
    console.print(table)

    if summary.modalities:
        features = Table(title="modality feature tables", title_justify="left")
        for column in ("modality", "width", "rows present", "published", "source"):
            features.add_column(column)
        for m in summary.modalities:
            features.add_row(
                m.name,
                str(m.width),
                f"{m.present:,} / {m.total:,} ({100 * m.fraction:.1f}%)",
                f"[green]yes[/] ({m.published})" if m.published else "no",
                _short_source(m.source, summary.root),
            )
        console.print(features)
    else:
        console.print("modality feature tables: none found (structural embeddings only)")

    if summary.warnings:
        console.print(f"[yellow]{len(summary.warnings)} warning(s):[/]")
        for warning in summary.warnings:
            console.print(f"  [yellow]-[/] {escape(warning)}", highlight=False)


@data_app.command("info")
@cli_errors
def info(path: DatasetDir) -> None:
    """Show entities, relations, split sizes, relation categories, feature coverage and warnings."""
    from dhns_search.data import load_dataset, summarize

    render_summary(summarize(load_dataset(path)))


@data_app.command("check")
@cli_errors
def check(path: DatasetDir) -> None:
    """Validate a dataset and its feature tables; print 'ok' or the problem (non-zero exit)."""
    from dhns_search.data import dataset_warnings, load_dataset

    dataset = load_dataset(path)
    for warning in dataset_warnings(dataset):
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    console.print("ok")


@data_app.command("synth")
@cli_errors
def synth(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory to write the graph to.", show_default=False, parser=path_value)
    ],
    seed: Annotated[int, typer.Option(help="Generator seed; the same seed writes the same bytes.")] = _D.seed,
    entities: Annotated[int, typer.Option(help="Number of entities.")] = _D.num_entities,
    relations: Annotated[int, typer.Option(help="Number of relations.")] = _D.num_relations,
    triples: Annotated[int, typer.Option(help="Number of distinct triples (all splits).")] = _D.num_triples,
    latent_dim: Annotated[int, typer.Option(help="Width of the hidden entity factors.")] = _D.latent_dim,
    visual_dim: Annotated[int, typer.Option(help="Width of the visual feature table.")] = _D.visual_dim,
    textual_dim: Annotated[int, typer.Option(help="Width of the textual feature table.")] = _D.textual_dim,
    feature_noise: Annotated[float, typer.Option(help="Noise of the feature tables.")] = _D.feature_noise,
    missing_fraction: Annotated[
        float, typer.Option(help="Fraction of rows without a feature vector.")
    ] = _D.missing_fraction,
    valid_fraction: Annotated[
        float, typer.Option(help="Fraction of triples in the validation split.")
    ] = _D.valid_fraction,
    test_fraction: Annotated[
        float, typer.Option(help="Fraction of triples in the test split.")
    ] = _D.test_fraction,
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty directory.")] = False,
) -> None:
    """Write the embedded synthetic multimodal graph (OpenKE files + features/*.npy)."""
    from dhns_search.data import load_dataset, summarize, synthesize

    cfg = validate_model(
        SynthConfig,
        {
            "seed": seed, "num_entities": entities, "num_relations": relations, "num_triples": triples,
            "latent_dim": latent_dim, "visual_dim": visual_dim, "textual_dim": textual_dim,
            "feature_noise": feature_noise, "missing_fraction": missing_fraction,
            "valid_fraction": valid_fraction, "test_fraction": test_fraction,
        },
        "synthetic graph options",
    )
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise DataError(f"{out}: directory is not empty; pass --force to write into it")
    synthesize(cfg, out)
    console.print(f"wrote the synthetic graph (seed {seed}) to {out}", highlight=False)
    render_summary(summarize(load_dataset(out)))


@features_app.command("text")
@cli_errors
def text(
    path: DatasetDir,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Output .npy file (default: DIR/features/textual.npy).", show_default=False,
            parser=path_value,
        ),
    ] = None,
    names: Annotated[
        Path | None,
        typer.Option("--names", help="Names file, one 'id<TAB>name' per line (needed for Wikidata ids).",
                     show_default=False, parser=path_value),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Names encoded per batch.")] = 128,
    device: Annotated[str, typer.Option("--device", help="Torch device of the encoder (cpu, cuda).")] = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Encode entity names with the offline all-MiniLM-L6-v2 model into a textual feature table."""
    from dhns_search.data.text import write_text_features

    target, unnamed = write_text_features(
        path, out, names_file=names, batch_size=batch_size, device=device, progress=not quiet
    )
    if unnamed:
        echo_err(f"[yellow]warning:[/] {unnamed:,} entities have no name: their rows are zero (missing)")
    console.print(f"wrote {target}", highlight=False)
    console.print(
        "note: these are substitute features; results made with them are not comparable to the published "
        "tables",
        highlight=False,
    )
