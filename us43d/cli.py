"""The `us43d` command line. Thin: parse, call the library, print."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from us43d.errors import Us43dError

app = typer.Typer(
    name="us43d",
    help="US-43d: build the 43-dataset ultrasound segmentation corpus and work with it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

RegistryDirs = Annotated[
    Optional[list[Path]],
    typer.Option("--registry", help="Extra registry directory of YAML entries (repeatable; also US43D_REGISTRY_PATH)."),
]


def _friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn our own errors into one clear line and exit code 2, not a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Us43dError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _registry(dirs: list[Path] | None):
    from us43d.registry import Registry

    return Registry.load(dirs or [])


@app.command("list")
@_friendly
def list_datasets(
    organ: Annotated[Optional[str], typer.Option(help="Only this organ group (the word --exclude takes).")] = None,
    modality: Annotated[Optional[str], typer.Option(help="image, volume or video.")] = None,
    access: Annotated[Optional[str], typer.Option(help="open, credentials or manual.")] = None,
    registry: RegistryDirs = None,
) -> None:
    """List the registry's datasets."""
    reg = _registry(registry)
    entries = reg.filter(organ, modality, access)
    table = Table(title=f"{len(entries)} of {len(reg)} datasets", show_lines=False)
    for column in ("id", "organ", "application", "modality", "access", "categories", "test split", "images"):
        table.add_column(column, overflow="fold")
    for e in entries:
        table.add_row(
            e.id, e.organ, e.application, e.modality, e.access, ", ".join(e.categories),
            "official" if e.test_split.kind == "official" else "-",
            f"{e.expected.images:,}" if e.expected.images is not None else "?",
        )
    console.print(table)


@app.command()
@_friendly
def info(dataset_id: Annotated[str, typer.Argument(help="Dataset id (case-insensitive).")], registry: RegistryDirs = None) -> None:
    """Everything the registry knows about one dataset."""
    import yaml

    reg = _registry(registry)
    entry = reg.get(dataset_id)
    console.print(f"[bold]{entry.name}[/]  ({reg.files[entry.id.lower()]})", highlight=False)
    data = entry.model_dump(mode="json", exclude_none=True)
    console.print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100), highlight=False, markup=False)


@app.command()
@_friendly
def docs(
    output: Annotated[Path, typer.Option(help="Where to write the dataset catalogue.")] = Path("DATASETS.md"),
    check: Annotated[bool, typer.Option("--check", help="Fail if the file is stale instead of writing it.")] = False,
) -> None:
    """Generate DATASETS.md from the built-in registry."""
    from us43d.registry import Registry
    from us43d.registry.docs import render_datasets_md

    text = render_datasets_md(Registry.load(include_builtin=True, extra_dirs=[]))
    if check:
        current = output.read_text() if output.is_file() else ""
        if current != text:
            err_console.print(f"{output} is stale: run `us43d docs`")
            raise typer.Exit(1)
        console.print(f"{output} is up to date")
        return
    output.write_text(text)
    console.print(f"wrote {output}")


@app.command()
@_friendly
def build(
    datasets: Annotated[Optional[list[str]], typer.Argument(help="Dataset ids; default: every dataset found in RAW.")] = None,
    raw: Annotated[Path, typer.Option(help="Folder holding RAW/<ID>/ as distributed (archives extracted).")] = Path("raw"),
    out: Annotated[Path, typer.Option(help="Corpus output folder.")] = Path("corpus"),
    workers: Annotated[int, typer.Option(help="Worker processes.")] = os.cpu_count() or 1,
    strict: Annotated[bool, typer.Option(help="Stop at the first bad file instead of reporting it.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the train/val split.")] = 0,
    force: Annotated[bool, typer.Option(help="Rebuild datasets even when their inputs did not change.")] = False,
    registry: RegistryDirs = None,
) -> None:
    """Convert raw datasets into one validated corpus (PNG + COCO + Parquet)."""
    from us43d.corpus.build import BuildOptions, build_corpus

    result = build_corpus(
        _registry(registry), raw, out, datasets,
        BuildOptions(workers=workers, strict=strict, seed=seed, force=force, progress=True), console,
    )
    _print_build(result)


def _print_build(result: Any) -> None:
    table = Table(title=f"build of {result.out}")
    for column in ("dataset", "images", "instances", "train", "val", "test", "no instance", "cleaned px", "errors", ""):
        table.add_column(column, justify="right" if column not in ("dataset", "") else "left")
    for dataset_id, r in sorted(result.reports.items()):
        splits = result.split_counts.get(dataset_id, {})
        table.add_row(
            dataset_id, str(r.images), str(r.instances), str(splits.get("train", 0)), str(splits.get("val", 0)),
            str(splits.get("test", 0)), str(r.dropped_without_instances), str(r.cleaned_pixels), str(len(r.errors)),
            "unchanged" if r.reused else f"{r.seconds:.1f}s",
        )
    console.print(table)
    if result.errors:
        err_console.print(f"[yellow]{len(result.errors)} problem(s) reported (details in {result.out / 'build.json'}):[/]")
        for e in result.errors[:20]:
            err_console.print(f"  {e['dataset']}: {e['file']}: {e['reason']}", highlight=False, markup=False)
        if len(result.errors) > 20:
            err_console.print(f"  ... and {len(result.errors) - 20} more")


@app.command()
@_friendly
def validate(
    out: Annotated[Path, typer.Argument(help="Corpus folder written by `us43d build`.")],
    pixels: Annotated[bool, typer.Option(help="Also open every PNG to check its size.")] = True,
) -> None:
    """Check every promise a built corpus makes."""
    from us43d.corpus.validate import validate_corpus

    report = validate_corpus(out, check_pixels=pixels)
    if report.ok:
        console.print(f"[green]valid[/]: {report.checked_images} images, {report.checked_annotations} annotations")
        return
    for problem in report.problems:
        err_console.print(problem, highlight=False, markup=False)
    err_console.print(f"[red]{len(report.problems)} problem(s)[/]")
    raise typer.Exit(1)


@app.command()
@_friendly
def stats(out: Annotated[Path, typer.Argument(help="Corpus folder written by `us43d build`.")]) -> None:
    """Counts per dataset, split and organ."""
    from us43d.corpus.stats import corpus_stats

    result = corpus_stats(out)
    table = Table(title="images / instances per dataset and split")
    for column in ("dataset", "organ", "train", "val", "test", "images", "instances"):
        table.add_column(column, justify="left" if column in ("dataset", "organ") else "right")
    for dataset_id, row in result.by_dataset.iterrows():
        table.add_row(
            str(dataset_id), row["organ"],
            *(f"{row[f'{s}_images']} / {row[f'{s}_instances']}" for s in ("train", "val", "test")),
            str(row["images"]), str(row["instances"]),
        )
    console.print(table)
    organs = Table(title="per organ group")
    for column in ("organ", "datasets", "images", "instances"):
        organs.add_column(column, justify="left" if column == "organ" else "right")
    for organ, row in result.by_organ.iterrows():
        organs.add_row(str(organ), str(row["datasets"]), str(row["images"]), str(row["instances"]))
    console.print(organs)


@app.command()
@_friendly
def demo(
    directory: Annotated[Optional[Path], typer.Option("--dir", help="Work folder (default: a temporary one, removed after).")] = None,
    patients: Annotated[int, typer.Option(help="Synthetic patients (1-2 images each).")] = 16,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = min(2, os.cpu_count() or 1),
) -> None:
    """Synthetic data in BUS-BRA's raw layout -> build -> validate -> stats, offline."""
    from us43d.corpus.build import BuildOptions, build_corpus
    from us43d.corpus.validate import validate_corpus
    from us43d.demo import make_bus_bra_like
    from us43d.registry import Registry

    started = time.perf_counter()
    work = directory or Path(tempfile.mkdtemp(prefix="us43d-demo-"))
    try:
        raw, out = work / "raw", work / "corpus"
        cases = make_bus_bra_like(raw / "BUS-BRA", patients=patients)
        console.print(f"[bold]1/3[/] wrote {len(cases)} synthetic images in BUS-BRA's layout under {raw / 'BUS-BRA'}")
        result = build_corpus(Registry.load(), raw, out, ["BUS-BRA"], BuildOptions(workers=workers, progress=True), console)
        _print_build(result)
        console.print("[bold]2/3[/] validating")
        report = validate_corpus(out)
        if not report.ok:
            for problem in report.problems:
                err_console.print(problem)
            raise typer.Exit(1)
        console.print(f"[green]valid[/]: {report.checked_images} images")
        console.print("[bold]3/3[/] statistics")
        stats(out)
        console.print(f"demo finished in {time.perf_counter() - started:.1f}s; corpus in {out}" if directory else
                      f"demo finished in {time.perf_counter() - started:.1f}s")
    finally:
        if directory is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    app()
