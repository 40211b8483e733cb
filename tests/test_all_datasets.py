"""All 43 fake raw trees in one RAW folder, built at once, validated, and counted.

The fake trees are those of the per-dataset tests in tests/converters/ (each writes
`RAW/<ID>/` exactly as the real distribution lays it out and checks its own dataset); here they
are written side by side and the whole corpus is built in one run.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from helpers import beyond_coverage, build
from us43d.cli import app
from us43d.corpus.stats import corpus_stats
from us43d.corpus.validate import validate_corpus
from us43d.registry import Registry

CONVERTER_TESTS = Path(__file__).parent / "converters"
FAKE_TREES = {
    "test_abdomen_us": ["test_fake_tree"],
    "test_aul": ["test_fake_tree"],
    "test_breast_tcia": ["test_fake_tree"],
    "test_buid": ["test_fake_tree"],
    "test_bus_b": ["test_fake_tree"],
    "test_bus_bra": ["test_fake_tree"],
    "test_bus_uc": ["test_fake_tree"],
    "test_bus_uclm": ["test_fake_tree"],
    "test_busi": ["test_fake_tree"],
    "test_ccaui": ["test_fake_tree"],
    "test_fallmud": ["test_fake_tree"],
    "test_gist514_db": ["test_fake_tree"],
    "test_hc18": ["test_fake_tree"],
    "test_kidney_us": ["test_fake_tree"],
    "test_luss_phantom": ["test_fake_tree"],
    "test_mmotu_2d": ["test_fake_tree"],
    "test_mmotu_3d": ["test_fake_tree"],
    "test_polygon_sets": ["test_ubpd", "test_fass"],
    "test_s1": ["test_fake_tree"],
    "test_stmus_nda": ["test_fake_tree"],
    "test_stu_hospital": ["test_fake_tree"],
    "test_tnscui": ["test_fake_tree"],
    "test_us105": ["test_fake_tree"],
    "test_us_nerve_seg": ["test_fake_tree"],
    "test_sequences": ["test_acouslic", "test_cardiac_udc_fills_contours_and_drops_slips", "test_echocp", "test_asus"],
    "test_thyroid_archive": ["test_ddti", "test_tg3k_jpeg_masks", "test_tn3k_official_test"],
    "test_videos": [
        "test_echonet_dynamic",
        "test_echonet_pediatric",
        "test_brachial_plexus",
        "test_thyroid_cineclip",
        "test_fast_u_net_and_regpro",
    ],
    "test_volumes": ["test_microseg_and_mup", "test_segthy", "test_camus_sequences", "test_fh_ps_aop"],
}


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"fake_trees_{name}", CONVERTER_TESTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_dataset_at_once(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for seed, (name, functions) in enumerate(sorted(FAKE_TREES.items())):
        module = _module(name)
        for function in functions:
            test = getattr(module, function)
            work = tmp_path / f"{name}.{function}"
            work.mkdir()
            arguments = test.__code__.co_varnames[: test.__code__.co_argcount]
            test(work, np.random.default_rng(seed)) if "rng" in arguments else test(work)
            for folder in (work / "raw").iterdir():  # the tree, checked by its own test, joins the rest
                folder.rename(raw / folder.name)
    registry = Registry.load()
    raw_folders = {p.name for p in raw.iterdir()}
    assert raw_folders == set(registry.ids), "every registry dataset has a fake tree"

    result = build(raw, tmp_path / "all", workers=2)
    assert set(result.reports) == set(registry.ids)
    # the only dataset problems: small fake trees of releases whose size the registry knows, and
    # the test lists that only some fakes carry
    flagged = {p["dataset"] for p in result.problems if "where the registry expects" in p["reason"]}
    assert flagged == {e.id for e in registry if e.expected.images or e.expected.sequences}
    assert beyond_coverage(result.problems) == [], beyond_coverage(result.problems)
    report = validate_corpus(tmp_path / "all")
    assert report.ok, report.problems[:5]
    stats = corpus_stats(tmp_path / "all")
    assert len(stats.by_dataset) == 43
    for dataset_id, row in stats.by_dataset.iterrows():
        assert row["images"] == result.reports[dataset_id].images > 0, dataset_id
        assert row["instances"] == result.reports[dataset_id].instances, dataset_id
        assert row["organ"] == registry.get(dataset_id).organ
    printed = CliRunner().invoke(app, ["stats", str(tmp_path / "all")])
    assert printed.exit_code == 0
    for dataset_id in registry.ids:
        assert dataset_id in printed.output
