"""The `us43d` command line. Thin: parse, call the library, print."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
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
    list[Path] | None,
    typer.Option("--registry", help="Extra registry directory of YAML entries (repeatable; also US43D_REGISTRY_PATH)."),
]


def _friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn our own errors into one clear line and exit code 2, not a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Us43dError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _registry(dirs: list[Path] | None):
    from us43d.registry import Registry

    return Registry.load(dirs or [])


@app.command("list")
@_friendly
def list_datasets(
    organ: Annotated[str | None, typer.Option(help="Only this organ group (the word --exclude takes).")] = None,
    modality: Annotated[str | None, typer.Option(help="image, volume or video.")] = None,
    access: Annotated[str | None, typer.Option(help="open, credentials or manual.")] = None,
    registry: RegistryDirs = None,
) -> None:
    """List the registry's datasets."""
    reg = _registry(registry)
    entries = reg.filter(organ, modality, access)
    table = Table(title=f"{len(entries)} of {len(reg)} datasets", show_lines=False)
    for column in ("id", "organ", "application", "modality", "access", "categories", "test split", "images"):
        table.add_column(column, overflow="fold", no_wrap=column == "id")
    for e in entries:
        table.add_row(
            e.id,
            e.organ,
            e.application,
            e.modality,
            e.access,
            ", ".join(e.categories),
            "official" if e.test_split.kind == "official" else "-",
            f"{e.expected.images:,}" if e.expected.images is not None else "?",
        )
    console.print(table)


@app.command()
@_friendly
def info(
    dataset_id: Annotated[str, typer.Argument(help="Dataset id (case-insensitive).")], registry: RegistryDirs = None
) -> None:
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
    datasets: Annotated[list[str] | None, typer.Argument(help="Dataset ids; default: every dataset found in RAW.")] = None,
    raw: Annotated[Path, typer.Option(help="Folder holding RAW/<ID>/ as distributed (archives extracted).")] = Path("raw"),
    out: Annotated[Path, typer.Option(help="Corpus output folder.")] = Path("corpus"),
    workers: Annotated[int, typer.Option(help="Worker processes.")] = os.cpu_count() or 1,
    strict: Annotated[bool, typer.Option(help="Stop at the first bad file instead of reporting it.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the train/val split.")] = 0,
    force: Annotated[bool, typer.Option(help="Rebuild datasets even when their inputs did not change.")] = False,
    registry: RegistryDirs = None,
) -> None:
    """Convert raw datasets into one validated corpus (PNG + COCO + Parquet).

    Files that cannot be converted are reported and skipped (exit 0). Exit 1: a dataset as a
    whole has a problem (its raw folder is missing, it yields no image or far fewer images than
    its registry entry expects, or a dataset outside this run lost files). Exit 2: the build did
    not run or was stopped: OUT held by another build, OUT not a corpus or overlapping RAW, an
    I/O fault such as a full disk (the previous version of the dataset is kept), --strict."""
    from us43d.corpus.build import BuildOptions, build_corpus

    result = build_corpus(
        _registry(registry),
        raw,
        out,
        datasets,
        BuildOptions(workers=workers, strict=strict, seed=seed, force=force, progress=True),
        console,
    )
    _print_build(result)
    if result.problems:  # a dataset missing, or yielding nothing or far less than expected
        raise typer.Exit(1)


def _found(found: int, expected: int | None, unit: str = "images") -> str:
    count = f"{found} / {expected}" if expected else str(found)
    return f"{count} seq." if unit == "sequences" else count


def _print_build(result: Any) -> None:
    table = Table(title=f"build of {result.out}")
    columns = ("dataset", "found / expected", "unannotated", "images", "instances", "train", "val", "test")
    for column in columns + ("no instance", "cleaned px (inst.)", "errors", "problems", ""):
        table.add_column(column, justify="right" if column not in ("dataset", "") else "left", no_wrap=column == "dataset")
    for dataset_id, r in sorted(result.reports.items()):
        splits = result.split_counts.get(dataset_id, {})
        table.add_row(
            dataset_id,
            _found(r.found, r.expected, r.expected_unit),
            str(r.unannotated),
            str(r.images),
            str(r.instances),
            str(splits.get("train", 0)),
            str(splits.get("val", 0)),
            str(splits.get("test", 0)),
            str(r.dropped_without_instances),
            f"{r.cleaned_pixels} ({r.cleaned_instances})",
            str(len(r.errors)),
            f"[red]{len(r.problems)}[/]" if r.problems else "0",
            "unchanged" if r.reused else f"{r.seconds:.1f}s",
        )
    console.print(table)
    for title, rows in (("dataset problem(s)", result.problems), ("file(s) could not be converted", result.item_errors)):
        if not rows:
            continue
        err_console.print(f"[yellow]{len(rows)} {title} (details in {result.out / 'build.json'}):[/]")
        for e in rows[:20]:
            err_console.print(f"  {e['dataset']}: {e['file']}: {e['reason']}", highlight=False, markup=False)
        if len(rows) > 20:
            err_console.print(f"  ... and {len(rows) - 20} more")


@app.command()
@_friendly
def validate(
    out: Annotated[Path, typer.Argument(help="Corpus folder written by `us43d build`.")],
    pixels: Annotated[bool, typer.Option(help="Also open every PNG to check its size.")] = True,
    deep: Annotated[bool, typer.Option(help="Also hash every PNG and compare with the hash the build recorded.")] = False,
    registry: RegistryDirs = None,
) -> None:
    """Check every promise a built corpus makes against the build's own record.

    Exit 0: valid. Exit 1: a problem was found (each is printed, naming its file). Exit 2: OUT
    holds no corpus, or a build is writing it."""
    from us43d.corpus.validate import validate_corpus

    report = validate_corpus(out, check_pixels=pixels, deep=deep, registry=_registry(registry))
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
    columns = ("dataset", "organ", "train", "val", "test", "images", "instances", "found / expected", "cleaned px (inst.)")
    for column in columns:
        table.add_column(column, justify="left" if column in ("dataset", "organ") else "right", no_wrap=column == "dataset")
    names = sorted(set(result.by_dataset.index) | set(result.build.index), key=str.lower)
    problems = []
    for dataset_id in names:
        row = result.by_dataset.loc[dataset_id] if dataset_id in result.by_dataset.index else None
        built = result.build.loc[dataset_id] if dataset_id in result.build.index else None
        counts = (
            [f"{row[f'{s}_images']} / {row[f'{s}_instances']}" for s in ("train", "val", "test")]
            if row is not None
            else ["-"] * 3
        )
        found = _found(int(built["found"]), built["expected"], built["expected_unit"]) if built is not None else "-"
        cleaned = f"{built['cleaned_pixels']} ({built['cleaned_instances']})" if built is not None else "-"
        name = f"[red]{dataset_id}[/]" if built is not None and built["problems"] else str(dataset_id)
        table.add_row(
            name,
            row["organ"] if row is not None else "",
            *counts,
            str(row["images"]) if row is not None else "0",
            str(row["instances"]) if row is not None else "0",
            found,
            cleaned,
        )
        problems += [f"{dataset_id}: {reason}" for reason in (built["problems"] if built is not None else [])]
    console.print(table)
    for line in problems:
        err_console.print(f"[yellow]problem[/] {line}", highlight=False)
    organs = Table(title="per organ group")
    for column in ("organ", "datasets", "images", "instances"):
        organs.add_column(column, justify="left" if column == "organ" else "right")
    for organ, row in result.by_organ.iterrows():
        organs.add_row(str(organ), str(row["datasets"]), str(row["images"]), str(row["instances"]))
    console.print(organs)


@app.command()
@_friendly
def show(
    out: Annotated[Path, typer.Argument(help="Corpus folder written by `us43d build`.")],
    datasets: Annotated[list[str] | None, typer.Option("--datasets", help="Only these datasets (repeatable).")] = None,
    report: Annotated[Path, typer.Option("--out", help="Report folder (new, empty, or an earlier report).")] = Path("report"),
    item: Annotated[str | None, typer.Option(help="Write one full-size overlay PNG of this image (<dataset>/<key>).")] = None,
) -> None:
    """A static HTML report of a corpus (overlays, counts, histograms, failures), or one overlay."""
    from us43d.corpus.report import write_item, write_report

    if item is not None:
        target = report if report != Path("report") else Path(item.replace("/", "__").removesuffix(".png") + ".png")
        console.print(f"wrote {write_item(out, item, target)}")
        return
    console.print(f"wrote {write_report(out, report, datasets)}")


@app.command()
@_friendly
def export(
    out: Annotated[Path, typer.Argument(help="Corpus folder written by `us43d build`.")],
    target: Annotated[Path, typer.Argument(help="Folder to write (new, empty, or an earlier export).")],
    format: Annotated[str, typer.Option("--format", help="hf (Hugging Face Parquet) or webdataset (tar shards).")] = "hf",
    datasets: Annotated[list[str] | None, typer.Option("--datasets", help="Only these datasets (repeatable).")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Leave out these organ groups (repeatable).")] = None,
    only_redistributable: Annotated[
        bool, typer.Option(help="Leave out datasets whose licence does not grant redistribution (or is unknown).")
    ] = False,
    shard_mb: Annotated[int | None, typer.Option(min=1, help="Shard size in MB (hf: 500, webdataset: 1024).")] = None,
    registry: RegistryDirs = None,
) -> None:
    """The corpus as the Hugging Face Hub loads datasets, or as WebDataset tar shards."""
    from us43d.corpus.export import export_hf, export_webdataset, redistribution, select

    writers = {"hf": export_hf, "webdataset": export_webdataset}
    if format not in writers:
        raise Us43dError(f"--format is hf or webdataset, not '{format}'")
    reg = _registry(registry)
    chosen = select(out, reg, datasets, exclude or (), only_redistributable)
    options = {"shard_bytes": shard_mb * 2**20} if shard_mb else {}
    exported = writers[format](out, target, chosen, reg, **options)
    table = Table(title=f"{format} export in {target}")
    for column in ("dataset", "train", "val", "test", "redistribution"):
        table.add_column(column)
    for e in exported:
        table.add_row(e.dataset, *(str(e.counts.get(s, 0)) for s in ("train", "val", "test")), redistribution(reg, e.dataset))
    console.print(table)


@app.command()
@_friendly
def fetch(
    datasets: Annotated[list[str] | None, typer.Argument(help="Dataset ids (case-insensitive).")] = None,
    all_datasets: Annotated[bool, typer.Option("--all", help="Every dataset of the registry.")] = False,
    downloads: Annotated[Path, typer.Option(help="Where downloads are kept (per source, verified).")] = Path("downloads"),
    raw: Annotated[Path, typer.Option(help="Where RAW/<ID>/ is extracted, for `us43d build`.")] = Path("raw"),
    workers: Annotated[int, typer.Option(help="Parallel downloads.")] = 4,
    from_files: Annotated[
        list[Path] | None, typer.Option("--from", help="Import files you downloaded by hand (one dataset).")
    ] = None,
    registry: RegistryDirs = None,
) -> None:
    """Download, verify and extract datasets; print what to do where no download is possible.

    Exit code: 0 when every dataset asked for is fetched and its converter can read it; 1 when
    one failed or cannot be read; 3 when none failed but one waits for a manual download or for
    credentials; 2 for a bad command or registry."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    from us43d.fetch.fetcher import exit_code as fetch_exit_code
    from us43d.fetch.fetcher import fetch as run_fetch

    reg = _registry(registry)
    if all_datasets == bool(datasets):
        raise Us43dError("name the datasets to fetch, or pass --all")
    entries = list(reg) if all_datasets else reg.resolve(datasets or [])
    for entry in entries:
        console.print(f"[bold]{entry.id}[/]: licence {entry.licence}", highlight=False)
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    tasks: dict[str, Any] = {}

    def progress(name: str, done: int, total: int | None) -> None:
        if name not in tasks:
            tasks[name] = bars.add_task(name, total=total)
        bars.update(tasks[name], completed=done, total=total)

    with bars:
        outcomes = run_fetch(entries, downloads, raw, workers, from_files or (), progress=progress)
    colours = {"fetched": "green", "manual": "yellow", "credentials": "yellow", "failed": "red", "unreadable": "red"}
    then = {
        "manual": "then: us43d fetch {} --from FILE",
        "credentials": "then: us43d fetch {} again",
        "unreadable": "see `us43d info {}` for the layout the converter expects",
    }
    for outcome in outcomes:
        label = {"credentials": "needs credentials", "unreadable": "fetched but unreadable"}.get(outcome.state, outcome.state)
        console.print(f"[{colours[outcome.state]}]{outcome.dataset}: {label}[/]", highlight=False)
        for message in outcome.messages:
            console.print(f"  {message}", highlight=False, markup=False)
        if outcome.state in then:
            console.print(f"  {then[outcome.state].format(outcome.dataset)}", highlight=False, markup=False)
    code = fetch_exit_code(outcomes)
    if code:
        raise typer.Exit(code)


@app.command()
@_friendly
def status(
    raw: Annotated[Path, typer.Option(help="RAW folder.")] = Path("raw"),
    downloads: Annotated[Path, typer.Option(help="Downloads folder.")] = Path("downloads"),
    out: Annotated[Path | None, typer.Option(help="Corpus folder, to tell built datasets.")] = Path("corpus"),
    registry: RegistryDirs = None,
) -> None:
    """Where every dataset stands: not fetched, partial, fetched, unreadable (its converter finds
    nothing to read), built."""
    from us43d.fetch.fetcher import dataset_status

    table = Table(title="datasets")
    for column in ("dataset", "access", "status"):
        table.add_column(column, no_wrap=column == "dataset")
    colours = {"built": "green", "fetched": "cyan", "unreadable": "red", "partial": "yellow", "not fetched": "dim"}
    for entry in _registry(registry):
        state = dataset_status(entry, downloads, raw, out)
        table.add_row(entry.id, entry.access, f"[{colours[state]}]{state}[/]")
    console.print(table)


MODEL_HELP = "vit_b, vit_l, vit_h or tiny (default: read from the checkpoint's tensors; vit_b without one)."
DECODER_HELP = (
    "authors (default: the UltraSam code's decoder, 2q + MLP(q), dropout 0.1 in training; their SAM and UltraSam rows) "
    "or sam (segment_anything's). A run's files and MMDetection files say their own and are converted."
)


def _parse_floats(text: str | None, count: int, name: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count:
        raise Us43dError(f"{name} takes {count} comma-separated numbers, got '{text}'")
    return values


def _parse_ints(text: str | None, name: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise Us43dError(f"{name} takes comma-separated whole numbers, got '{text}'") from None


@app.command()
@_friendly
def train(
    corpus: Annotated[Path, typer.Option(help="Corpus folder written by `us43d build`.")] = Path("corpus"),
    out: Annotated[Path, typer.Option(help="Run folder: checkpoints, metrics, loss curves.")] = Path("runs/ultrasam"),
    exclude: Annotated[
        str | None, typer.Option(help="Organ group(s) to leave out (UltraSam*), e.g. breast or breast,ovary.")
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option(
            help="Starting weights of a new run (required): official SAM (sam_vit_b_01ec64.pth, from "
            "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth), MedSAM, UltraSam.pth "
            "or a run's model.pth; 'none' trains from random weights."
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of training settings (flags override it).")] = None,
    resume_run: Annotated[bool, typer.Option("--resume", help="Continue the run in --out exactly where it stopped.")] = False,
    model: Annotated[str | None, typer.Option(help="vit_b (default), vit_l, vit_h, or tiny (tests, demos).")] = None,
    iters: Annotated[int | None, typer.Option(help="Iterations in all (default 30,000; with --resume: a new total).")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Images per step and GPU (default 8, or the preset's); accumulation makes up the rest.")
    ] = None,
    image_size: Annotated[int | None, typer.Option(help="Input side (default: the model's, 1024).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default 1e-4).")] = None,
    workers: Annotated[int | None, typer.Option(help="Data-loading processes per GPU.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of data order and augmentation.")] = None,
    datasets: Annotated[str | None, typer.Option(help="Only these datasets (comma-separated).")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Save every N iterations.")] = None,
    efficient_attention: Annotated[
        bool | None, typer.Option("--efficient-attention/--no-efficient-attention", help="SDPA attention in the image encoder.")
    ] = None,
    refine: Annotated[
        bool | None,
        typer.Option("--refine/--no-refine", help="Refinement pass with the previous mask logits (recipe default: on)."),
    ] = None,
    decoder: Annotated[str | None, typer.Option(help=DECODER_HELP)] = None,
    global_batch: Annotated[
        int | None, typer.Option(help="Images per iteration over all GPUs and accumulation steps (recipe: 32).")
    ] = None,
    accumulation: Annotated[
        int | None, typer.Option(help="Steps per iteration (default: --global-batch / (--batch-size x GPUs)).")
    ] = None,
    warmup_iters: Annotated[int | None, typer.Option(help="Warm-up iterations (default: 500/30,000 of --iters).")] = None,
    milestones: Annotated[
        str | None,
        typer.Option(
            help="Iterations where the lr drops x0.1, comma-separated, '' for none "
            "(default: 20,000 and 28,888 of 30,000, scaled to --iters)."
        ),
    ] = None,
    val_every: Annotated[
        int | None, typer.Option(help="Validate every N iterations and at the end; 0: never (default: 5,000/30,000 of --iters).")
    ] = None,
    val_max_images: Annotated[
        int | None, typer.Option(help="Validate on at most N val images per dataset (default: all; a fixed seeded subset).")
    ] = None,
    precision: Annotated[
        str | None, typer.Option(help="fp32 (default: the authors' precision) or bf16 (autocast: faster, other numerics).")
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="GPU memory: 24gb, 40gb or 80gb sets --batch-size and checkpointing (ViT-B, 1024).")
    ] = None,
    activation_checkpointing: Annotated[
        bool | None,
        typer.Option(
            "--activation-checkpointing/--no-activation-checkpointing",
            help="Recompute image-encoder blocks in the backward pass: less memory, about a third more compute.",
        ),
    ] = None,
    freeze_encoder: Annotated[
        bool | None,
        typer.Option("--freeze-encoder/--no-freeze-encoder", help="Train the prompt encoder and mask decoder only."),
    ] = None,
    tensorboard: Annotated[
        bool | None, typer.Option("--tensorboard/--no-tensorboard", help="Also log to RUN/tensorboard (needs tensorboard).")
    ] = None,
    prompt: Annotated[
        str | None,
        typer.Option(
            help="Prompt kinds with their probabilities per instance: point, box (UltraSam) and boundary (SAMUSA's clicks "
            "on the mask's boundary, point label 4), e.g. boundary or point=0.25,box=0.25,boundary=0.5 "
            "(recipe: point=0.5,box=0.5)."
        ),
    ] = None,
    boundary_click_images: Annotated[
        int | None, typer.Option(help="Images per step whose boundary clicks grow one by one (default 2, as SAMUSA).")
    ] = None,
    boundary_max_clicks: Annotated[
        int | None, typer.Option(help="Those images get 2 to this many boundary clicks, one draw per batch (default 10).")
    ] = None,
    boundary_loss_weight: Annotated[
        float | None, typer.Option(help="Weight of SAMUSA's boundary loss (default: 2 with boundary prompts, else 0).")
    ] = None,
    boundary_loss_form: Annotated[
        str | None,
        typer.Option(help="edge (default: the blurred mask's boundary-ness at the clicks) or literal (exp(-sum G_I G_P))."),
    ] = None,
) -> None:
    """Fine-tune SAM on the corpus with the UltraSam recipe (torchrun for several GPUs).

    The recipe's 32 images per iteration are reached with gradient accumulation on fewer GPUs,
    and its warm-up, decays and validation cadence scale with --iters unless given.

    A new run needs a new or empty --out. --resume continues the run in --out with its own
    settings; --iters then sets a new total (above the iteration reached), --workers,
    --checkpoint-every, --accumulation and --tensorboard may change, and any other setting that
    differs is refused."""
    from us43d.training.train import TrainConfig, read_settings_file, resume
    from us43d.training.train import train as start

    overrides = {
        "model": model,
        "iters": iters,
        "batch_size": batch_size,
        "image_size": image_size,
        "lr": lr,
        "workers": workers,
        "seed": seed,
        "checkpoint_every": checkpoint_every,
        "efficient_attention": efficient_attention,
        "refine": refine,
        "decoder": decoder,
        "global_batch": global_batch,
        "accumulation": accumulation,
        "warmup_iters": warmup_iters,
        "milestones": _parse_ints(milestones, "--milestones"),
        "val_every": val_every,
        "val_max_images": val_max_images,
        "precision": precision,
        "preset": preset,
        "activation_checkpointing": activation_checkpointing,
        "freeze_encoder": freeze_encoder,
        "tensorboard": tensorboard,
        "prompt": prompt,
        "boundary_click_images": boundary_click_images,
        "boundary_max_clicks": boundary_max_clicks,
        "boundary_loss_weight": boundary_loss_weight,
        "boundary_loss_form": boundary_loss_form,
        "exclude": tuple(exclude.split(",")) if exclude else None,
        "datasets": tuple(datasets.split(",")) if datasets else None,
        "init": str(init) if init else None,
    }
    given = {**(read_settings_file(config) if config else {}), **{k: v for k, v in overrides.items() if v is not None}}
    if resume_run:
        summary = resume(corpus, out, given, console=console)
    else:
        summary = start(corpus, out, TrainConfig.from_dict(given), console=console)
    best = summary.get("best")
    kept = f", best by val mAP ({best['val_mAP']:.2f} at step {best['step']}) in {out / 'best.pth'}" if best else ""
    console.print(f"done: {summary['steps']} iterations; weights in {out / 'model.pth'}{kept}, curves in {out / 'losses.png'}")


@app.command("eval")
@_friendly
def evaluate_checkpoint(
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint to evaluate (SAM, MedSAM, UltraSam or ours).")] = None,
    corpus: Annotated[Path, typer.Option(help="Corpus folder written by `us43d build`.")] = Path("corpus"),
    datasets: Annotated[
        str, typer.Option(help="Datasets, comma-separated, or 'all' (every dataset of the corpus with images in --split).")
    ] = "BUS-BRA,MMOTU-2D,GIST514-DB",
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    prompt: Annotated[str | None, typer.Option(help="point, box or both (default: both).")] = None,
    model: Annotated[str | None, typer.Option(help=MODEL_HELP)] = None,
    image_size: Annotated[int | None, typer.Option(help="Input side (default: the checkpoint's).")] = None,
    decoder: Annotated[str | None, typer.Option(help=DECODER_HELP)] = None,
    clicks: Annotated[
        str | None,
        typer.Option(
            help="Interactive evaluation instead of mAP: a simulated user clicks N times on every instance "
            "(N or 1..N, N up to 20); mean Dice and IoU after each click, per dataset."
        ),
    ] = None,
    click_mode: Annotated[
        str | None,
        typer.Option(
            help="With --clicks: region (default: the mask's centre, then the largest error region) or boundary "
            "(SAMUSA: points on the mask's boundary)."
        ),
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="With --clicks: write the Dice and IoU curves to this PNG file.")] = None,
    protocol: Annotated[
        str,
        typer.Option(
            help="authors: the paper's Table 1 measurement (refinement, binary post-processing, class-agnostic, "
            "MMOTU-2D test cut to its largest instances); sam: segment_anything's own inference on the corpus as built."
        ),
    ] = "authors",
    refine: Annotated[
        bool | None, typer.Option("--refine/--no-refine", help="Test-time refinement pass (default: the protocol's).")
    ] = None,
    postprocess: Annotated[
        str | None,
        typer.Option(
            help="binary (authors: binarise, then upsample) or logits (SAM: upsample, then binarise); default: the protocol's."
        ),
    ] = None,
    class_agnostic: Annotated[
        bool | None,
        typer.Option(
            "--class-agnostic/--per-class", help="Score every category as one (default: the protocol's, class-agnostic)."
        ),
    ] = None,
    mmotu_largest: Annotated[
        bool | None,
        typer.Option(
            "--mmotu-largest/--mmotu-all",
            help="MMOTU-2D test ground truth: the largest instance per image, or every instance (default: the protocol's).",
        ),
    ] = None,
    max_images: Annotated[
        int | None, typer.Option(min=1, help="Only the first N images with an instance per dataset (a quick look).")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write {checkpoint, split, protocol, max_images, scores} here.")
    ] = None,
) -> None:
    """Prompt-based COCO mAP per dataset on one split; by default the paper's Table 1 (official
    test sets, the authors' protocol). The protocol is printed with every table."""
    from us43d.training.evaluate import corpus_datasets, evaluate, load_predictor, split_file
    from us43d.training.outputs import refuse_overwriting
    from us43d.training.protocol import resolve_protocol

    if prompt not in (None, "point", "box", "both"):
        raise Us43dError("--prompt takes point, box or both")
    if split not in ("train", "val", "test"):
        raise Us43dError("--split takes train, val or test")
    rounds = _check_click_options(clicks, click_mode, plot, prompt, refine, class_agnostic)
    chosen = resolve_protocol(protocol, refine, postprocess, class_agnostic, mmotu_largest)
    if json_out:
        if json_out.is_dir():
            raise Us43dError(f"--json {json_out} is a folder: give the path of the file to write")
        refuse_overwriting(json_out, {"the checkpoint": checkpoint}, "--json")
    if plot:
        refuse_overwriting(plot, {"the checkpoint": checkpoint, "the --json file": json_out}, "--plot")
    prompts = ("point", "box") if prompt in (None, "both") else (prompt,)
    if datasets.strip().lower() == "all":
        names = corpus_datasets(corpus, split)
    else:
        from us43d.registry import Registry

        registry = Registry.load()
        names = [d.strip() for d in datasets.split(",") if d.strip()]
        names = [registry.get(n).id if n in registry else n for n in names]
        if not names:
            raise Us43dError("--datasets is empty: name datasets, comma-separated, or give 'all'")
    for name in names:
        split_file(corpus, name, split)  # a missing file is reported before the model is loaded
    if checkpoint is None:
        err_console.print("note: no --checkpoint: evaluating randomly initialised weights")
    notes: list[str] = []
    predictor = load_predictor(checkpoint, model, image_size, decoder=decoder, report=notes.append)
    if rounds:
        from us43d.training.plot import click_curves_png

        interactive = _evaluate_clicks(
            predictor, checkpoint, corpus, names, rounds, click_mode or "region", chosen, split, max_images
        )
        for note in notes:
            console.print(note, highlight=False, markup=False)
        document = {"checkpoint": str(checkpoint) if checkpoint else None, "split": split, "max_images": max_images}
        if json_out:
            _write_output(json_out, (json.dumps({**document, "interactive": interactive}, indent=2) + "\n").encode(), "--json")
        if plot:
            _write_output(plot, click_curves_png(interactive["scores"]), "--plot")
        return
    table = evaluate(predictor, corpus, names, prompts, protocol=chosen, split=split, max_images=max_images)
    result = Table(title=f"mAP / mAP@50 (%), {split} split")
    result.add_column("dataset")
    for p in prompts:
        result.add_column(p, justify="right")
    for name in names:
        result.add_row(name, *(f"{table[name][p]['mAP']:.1f} / {table[name][p]['mAP50']:.1f}" for p in prompts))
    console.print(result)
    settings = Table(title="evaluation protocol", show_header=False)
    settings.add_column("setting", no_wrap=True)
    settings.add_column("value")
    settings.add_row("checkpoint", str(checkpoint) if checkpoint else "none (random weights)")
    settings.add_row("split", split)
    settings.add_row("images", f"the first {max_images} with an instance, per dataset" if max_images else "all")
    for label, text in chosen.describe(split):
        settings.add_row(label, text)
    console.print(settings)
    for note in notes:
        console.print(note, highlight=False, markup=False)
    if json_out:
        document = {
            "checkpoint": str(checkpoint) if checkpoint else None,
            "split": split,
            "protocol": chosen.as_dict(),
            "max_images": max_images,
            "scores": table,
        }
        _write_output(json_out, (json.dumps(document, indent=2) + "\n").encode(), "--json")


def _write_output(path: Path, data: bytes, flag: str) -> None:
    """A result file, written whole or not at all."""
    from us43d.corpus.writers import atomic_write_bytes
    from us43d.errors import os_error_text

    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise Us43dError(f"cannot write {flag} {path}: {os_error_text(exc)}") from None


def _check_click_options(
    clicks: str | None,
    click_mode: str | None,
    plot: Path | None,
    prompt: str | None,
    refine: bool | None,
    class_agnostic: bool | None,
) -> int:
    """The number of clicks to score (0: the mAP evaluation), once options that do not go
    together are refused: silently ignoring one would report a number it did not shape."""
    from us43d.training.interactive import check_mode, parse_clicks

    if clicks is None:
        for flag, value in (("--click-mode", click_mode), ("--plot", plot)):
            if value is not None:
                raise Us43dError(f"{flag} needs --clicks (the interactive evaluation)")
        return 0
    rounds = parse_clicks(clicks)
    check_mode(click_mode or "region")
    mAP_only = (("--prompt", prompt), ("--refine/--no-refine", refine), ("--class-agnostic/--per-class", class_agnostic))
    for flag, value in mAP_only:
        if value is not None:
            raise Us43dError(f"{flag} belongs to the mAP evaluation and does not apply with --clicks")
    if plot is not None and (plot.is_dir() or plot.suffix.lower() != ".png"):
        raise Us43dError(f"--plot {plot} must be the path of a .png file to write")
    return rounds


def _evaluate_clicks(
    predictor: Any,
    checkpoint: Path | None,
    corpus: Path,
    names: list[str],
    rounds: int,
    mode: str,
    protocol: Any,
    split: str,
    max_images: int | None,
) -> dict[str, Any]:
    """Score, print the two tables and the settings, and return the `interactive` JSON section."""
    from us43d.training.interactive import boundary_label_of, clicks_document, describe_clicks, evaluate_clicks

    curves = evaluate_clicks(predictor, corpus, names, rounds, mode, protocol, split, max_images)
    for metric, title in (("dice", "Dice"), ("iou", "IoU")):
        table = Table(title=f"mean {title} (%) after each click, {mode} clicks, {split} split")
        table.add_column("dataset")
        table.add_column("instances", justify="right")
        for click in range(1, rounds + 1):
            table.add_column(str(click), justify="right")
        for name in names:
            values = getattr(curves[name], metric)
            cells = [f"{v:.1f}" for v in values] if values else ["-"] * rounds  # no instance: nothing to average
            table.add_row(name, str(curves[name].instances), *cells)
        console.print(table)
    _, boundary_words = boundary_label_of(predictor.sam)
    settings = Table(title="interactive evaluation", show_header=False)
    settings.add_column("setting", no_wrap=True)
    settings.add_column("value")
    settings.add_row("checkpoint", str(checkpoint) if checkpoint else "none (random weights)")
    settings.add_row("split", split)
    settings.add_row("images", f"the first {max_images} with an instance, per dataset" if max_images else "all")
    for label, text in describe_clicks(mode, rounds, boundary_words):
        settings.add_row(label, text)
    settings.add_row("post-processing", f"{protocol.postprocess} (from --protocol {protocol.preset} or --postprocess)")
    settings.add_row("MMOTU-2D test", "largest instance per image" if protocol.mmotu_largest else "every instance")
    console.print(settings)
    skipped = {n: c.skipped_empty for n, c in curves.items() if c.skipped_empty}
    if skipped:
        err_console.print(f"note: instances with an empty mask were not scored: {skipped}", highlight=False, markup=False)
    if mode == "boundary":
        console.print(f"boundary clicks were fed as {boundary_words}", highlight=False, markup=False)
    return clicks_document(mode, rounds, boundary_words, protocol, curves)


@app.command("convert-checkpoint")
@_friendly
def convert_checkpoint(
    source: Annotated[Path, typer.Argument(help="UltraSam.pth (MMDetection names) or any supported checkpoint.")],
    target: Annotated[Path, typer.Argument(help="Output file.")],
    to: Annotated[str, typer.Option(help="sam (segment_anything names) or mmdet.")] = "sam",
    decoder: Annotated[
        str | None,
        typer.Option(
            help="The decoder SOURCE's weights are for, where the file does not say (MMDetection files are the "
            "authors', a run's files record theirs): authors (default, as the authors' code reads official SAM) or sam."
        ),
    ] = None,
) -> None:
    """Convert between MMDetection (UltraSam release) and segment_anything checkpoints.

    The output keeps the weights' outputs: segment_anything names are written for
    segment_anything's decoder, MMDetection names for the authors'."""
    from us43d.training.checkpoints import convert_checkpoint as convert
    from us43d.training.outputs import refuse_overwriting
    from us43d.training.sam import DECODER_NAMES

    if to not in ("sam", "mmdet"):
        raise Us43dError("--to takes sam or mmdet")
    refuse_overwriting(target, {"the source checkpoint": source}, "target")
    count, form, dropped = convert(source, target, to, decoder)
    names = "segment_anything names, for its decoder" if to == "sam" else "MMDetection names, for the authors' decoder"
    console.print(f"wrote {target}: {count} tensors ({names}); {source} was read as weights for {DECODER_NAMES[form]}")
    if dropped:
        console.print(f"left out {', '.join(dropped)} (boundary clicks): neither format has a place for it")
    if to == "sam":
        console.print(f"to evaluate {target} itself with us43d, give --decoder sam (files of this kind do not say their form)")


@app.command()
@_friendly
def predict(
    image: Annotated[Path, typer.Argument(help="Image file.")],
    checkpoint: Annotated[Path, typer.Option(help="Model checkpoint.")],
    out: Annotated[
        Path,
        typer.Option(
            help="Mask PNG to write, or an existing folder (it gets IMAGE-STEM.mask.png); "
            "the overlay goes beside the mask as MASK-STEM.overlay.png. Never one of the inputs."
        ),
    ],
    point: Annotated[str | None, typer.Option(help="X,Y in image pixels.")] = None,
    box: Annotated[str | None, typer.Option(help="X0,Y0,X1,Y1 in image pixels.")] = None,
    model: Annotated[str | None, typer.Option(help=MODEL_HELP)] = None,
    image_size: Annotated[int | None, typer.Option(help="Input side (default: the checkpoint's).")] = None,
    decoder: Annotated[str | None, typer.Option(help=DECODER_HELP)] = None,
) -> None:
    """Segment one structure of one image from a point or a box."""
    from us43d.training.evaluate import load_predictor
    from us43d.training.predict import predict_image, prediction_paths, write_prediction

    if (point is None) == (box is None):
        raise Us43dError("give exactly one of --point X,Y or --box X0,Y0,X1,Y1")
    prompt_point, prompt_box = _parse_floats(point, 2, "--point"), _parse_floats(box, 4, "--box")
    mask_path, overlay_path = prediction_paths(image, out, {"the input image": image, "the checkpoint": checkpoint})
    notes: list[str] = []
    predictor = load_predictor(checkpoint, model, image_size, decoder=decoder, report=notes.append)
    mask, score, rgb = predict_image(predictor, image, prompt_point, prompt_box)
    write_prediction(mask, rgb, mask_path, overlay_path)
    console.print(f"wrote {mask_path} ({int(mask.sum())} pixels, predicted IoU {score:.3f}) and {overlay_path}")
    for note in notes:
        console.print(note, highlight=False, markup=False)


@app.command()
@_friendly
def classify(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint whose encoder is used (SAM, MedSAM, UltraSam or ours).")],
    out: Annotated[
        Path,
        typer.Option(
            help="Run folder: new, empty, or an earlier classify run's (its feature cache is reused). "
            "Gets scores.json, DATASET.pt and features/."
        ),
    ],
    corpus: Annotated[Path, typer.Option(help="Corpus folder written by `us43d build`.")] = Path("corpus"),
    datasets: Annotated[
        str, typer.Option(help="Datasets with image-level classes, comma-separated; one classifier each.")
    ] = "BUS-BRA,MMOTU-2D,GIST514-DB",
    mode: Annotated[
        str, typer.Option(help="finetune (the paper: encoder and head trained) or probe (frozen encoder, cached features).")
    ] = "finetune",
    variant: Annotated[
        str,
        typer.Option(
            help="image (averaged encoder tokens, the paper's Table 2) or prompted (the ground-truth box and the "
            "image decoded by the mask decoder; its output tokens averaged)."
        ),
    ] = "image",
    iters: Annotated[int, typer.Option(help="Training iterations (the paper: 2000).")] = 2000,
    batch_size: Annotated[int, typer.Option(help="Images per iteration (the paper: 8).")] = 8,
    lr: Annotated[float, typer.Option(help="AdamW learning rate (the paper: 1e-4).")] = 1e-4,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay (the paper: 1e-4).")] = 1e-4,
    clip_grad: Annotated[float, typer.Option(help="Gradient norm limit, 0 for none (the paper: 0.1).")] = 0.1,
    flip: Annotated[bool, typer.Option("--flip/--no-flip", help="Random horizontal flips when fine-tuning.")] = True,
    val_every: Annotated[int, typer.Option(help="Iterations between model-selection checks on val (0: four per run).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the head's initialisation, the batches and the flips.")] = 0,
    model: Annotated[str | None, typer.Option(help=MODEL_HELP)] = None,
    image_size: Annotated[int | None, typer.Option(help="Input side (default: the checkpoint's).")] = None,
    decoder: Annotated[str | None, typer.Option(help=DECODER_HELP + " Used by --variant prompted.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N (default: cuda when there is one).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the run's record (scores.json) here.")] = None,
) -> None:
    """Image classification from a checkpoint's encoder: macro precision, recall and F1 on each
    dataset's official test split, in the layout of the paper's Table 2."""
    from us43d.corpus.writers import atomic_write_bytes
    from us43d.errors import os_error_text
    from us43d.training.classify import CLASSIFIED, ClassifyConfig
    from us43d.training.classify import classify as run_classify
    from us43d.training.outputs import refuse_overwriting

    config = ClassifyConfig(
        mode=mode,
        variant=variant,
        iters=iters,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        clip_grad=clip_grad,
        flip=flip,
        val_every=val_every,
        seed=seed,
    )
    if json_out:
        if json_out.is_dir():
            raise Us43dError(f"--json {json_out} is a folder: give the path of the file to write")
        refuse_overwriting(json_out, {"the checkpoint": checkpoint, "the run's scores.json": out / "scores.json"}, "--json")
    names = [d.strip() for d in datasets.split(",") if d.strip()]
    notes: list[str] = []
    document = run_classify(corpus, out, checkpoint, names, config, model, image_size, decoder, device, notes.append)
    scores = document["scores"]
    table = Table(title=f"classification on the official test splits, macro % ({mode}, {variant})")
    table.add_column("checkpoint")
    for name in scores:
        for metric in ("P", "R", "F1"):
            table.add_column(f"{name} {metric}", justify="right")
    cells = [f"{100 * scores[n][key]:.1f}" for n in scores for key in ("precision", "recall", "f1")]
    table.add_row(checkpoint.name, *cells)
    console.print(table)
    for name, result in scores.items():
        images = result["images"]
        left = sum(result["unlabelled_left_out"].values())
        console.print(
            f"{name}: {len(result['classes'])} classes; train {images['train']}, val {images['val']}, test {images['test']} "
            f"images; iteration {result['selected_iter']} kept" + (f"; {left} unlabelled images left out" if left else ""),
            highlight=False,
            markup=False,
        )
    console.print(f"classified: {CLASSIFIED[variant]}", highlight=False, markup=False)
    for note in notes:
        console.print(note, highlight=False, markup=False)
    console.print(f"wrote {out / 'scores.json'}", highlight=False, markup=False)
    if json_out:
        try:
            atomic_write_bytes(json_out, (json.dumps(document, indent=2) + "\n").encode())
        except OSError as exc:
            raise Us43dError(f"cannot write --json {json_out}: {os_error_text(exc)}") from None


@app.command()
@_friendly
def demo(
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Work folder: new, empty, or made by an earlier demo (default: a temporary one, removed after).",
        ),
    ] = None,
    patients: Annotated[int, typer.Option(min=5, help="Synthetic patients (1-2 images each).")] = 16,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = min(2, os.cpu_count() or 1),
    train_iters: Annotated[int, typer.Option(min=0, help="Iterations of the tiny model's training (0 skips training).")] = 150,
) -> None:
    """Synthetic data in BUS-BRA's raw layout -> build -> validate -> stats -> train a tiny SAM
    -> evaluate it against its untrained self, offline."""
    from us43d.corpus.build import BuildOptions, build_corpus
    from us43d.corpus.validate import validate_corpus
    from us43d.demo import claim_folder, make_bus_bra_like
    from us43d.registry import Registry

    started = time.perf_counter()
    if directory is not None:
        claim_folder(directory)
    work = directory or Path(tempfile.mkdtemp(prefix="us43d-demo-"))
    try:
        raw, out = work / "raw", work / "corpus"
        cases = make_bus_bra_like(raw / "BUS-BRA", patients=patients)
        console.print(f"[bold]1/3[/] wrote {len(cases)} synthetic images in BUS-BRA's layout under {raw / 'BUS-BRA'}")
        result = build_corpus(Registry.load(), raw, out, ["BUS-BRA"], BuildOptions(workers=workers, progress=True), console)
        _print_build(result)
        console.print(f"(the build rightly reports a problem: the demo holds {len(cases)} of BUS-BRA's images)")
        console.print("[bold]2/3[/] validating")
        report = validate_corpus(out)
        if not report.ok:
            for problem in report.problems:
                err_console.print(problem)
            raise typer.Exit(1)
        console.print(f"[green]valid[/]: {report.checked_images} images")
        console.print("[bold]3/3[/] statistics")
        stats(out)
        if train_iters > 0:
            _demo_training(out, work / "run", train_iters, workers)
        console.print(
            f"demo finished in {time.perf_counter() - started:.1f}s; corpus in {out}"
            if directory
            else f"demo finished in {time.perf_counter() - started:.1f}s"
        )
    finally:
        if directory is None:
            shutil.rmtree(work, ignore_errors=True)


def _demo_training(corpus: Path, run: Path, iters: int, workers: int) -> None:
    try:
        from us43d.training.evaluate import evaluate, load_predictor
        from us43d.training.sam import sam_package
        from us43d.training.train import TrainConfig
        from us43d.training.train import train as run_training

        sam_package()
    except Us43dError as exc:  # torch or segment-anything missing: the data demo still stands
        console.print(f"[yellow]skipping the training part of the demo:[/] {exc}")
        return
    import torch

    torch.manual_seed(0)
    untrained = evaluate(load_predictor(None, "tiny"), corpus, ["BUS-BRA"])
    console.print(f"[bold]4/5[/] training the tiny model for {iters} iterations (UltraSam recipe, small shapes)")
    settings = TrainConfig(
        model="tiny",
        iters=iters,
        batch_size=4,
        global_batch=4,  # one step of 4 per iteration: the demo stays short on a laptop
        lr=1e-3,
        warmup_iters=20,
        milestones=(),
        workers=0,
        checkpoint_every=iters,
        log_every=10,
        val_every=0,  # the demo scores its test fold after training; validating too would double its time
        init="none",  # the demo shows the recipe on synthetic data, from random weights
    )
    run_training(corpus, run, settings, console=console)
    trained = evaluate(load_predictor(run / "model.pth", "tiny"), corpus, ["BUS-BRA"])
    console.print("[bold]5/5[/] evaluation on the synthetic BUS-BRA test fold (official fold 1)")
    from us43d.training.protocol import DEFAULT_PROTOCOL

    table = Table(title="mAP / mAP@50 (%)", caption=DEFAULT_PROTOCOL.summary())
    for column in ("model", "point", "box"):
        table.add_column(column)
    for name, result in (("untrained", untrained), ("trained", trained)):
        table.add_row(
            name, *(f"{result['BUS-BRA'][p]['mAP']:.1f} / {result['BUS-BRA'][p]['mAP50']:.1f}" for p in ("point", "box"))
        )
    console.print(table)


if __name__ == "__main__":
    app()
