from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import private_entry
from us43d.errors import RegistryError
from us43d.registry import Registry
from us43d.registry.docs import render_datasets_md

REFERENCE_IDS = (
    "105US, AbdomenUS, ACOUSLIC, ASUS, AUL, brachial-plexus, BrEaST, BUID, BUS-UC, BUS-UCLM, BUS-BRA, BUS-B, BUSI, "
    "CAMUS, CardiacUDC, CCAUI, DDTI, EchoCP, EchoNet-Dynamic, EchoNet-Pediatric, FALLMUD, FASS, Fast-U-Net, FH-PS-AOP, "
    "GIST514-DB, HC18, kidneyUS, LUSS-phantom, MicroSeg, MMOTU-2D, MMOTU-3D, MUP, regPro, S1, SegThy, STMUS-NDA, "
    "STU-Hospital, TG3K, Thyroid-US-Cineclip, TN3K, TNSCUI, UBPD, US-Nerve-Seg"
).split(", ")
ROOT = Path(__file__).resolve().parents[1]


minimal_entry = private_entry


def write_entry(folder: Path, entry: dict, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name or entry['id']}.yaml"
    path.write_text(yaml.safe_dump(entry))
    return path


def test_builtin_registry_holds_exactly_the_43_reference_ids() -> None:
    registry = Registry.load()
    assert sorted(registry.ids) == sorted(REFERENCE_IDS)
    assert len(registry) == 43


def test_paper_test_sets_are_official_and_organs_are_exclusion_words() -> None:
    registry = Registry.load()
    for dataset_id in ("BUS-BRA", "MMOTU-2D", "GIST514-DB"):
        assert registry.get(dataset_id).test_split.kind == "official"
    assert registry.get("BUS-BRA").organ == "breast"
    assert registry.get("MMOTU-2D").organ == "ovary"
    assert registry.get("GIST514-DB").organ == "gastrointestinal"
    assert {"breast", "ovary", "thyroid", "heart", "fetal"} <= set(registry.organs())
    for entry in registry:
        if entry.modality in ("volume", "video"):
            assert entry.slicing_axis is not None and entry.slicing_note, entry.id


def test_lookup_is_case_insensitive_and_unknown_ids_are_refused() -> None:
    registry = Registry.load()
    assert registry.get("bus-bra").id == "BUS-BRA"
    assert registry.get("mmotu-2d").id == "MMOTU-2D"
    with pytest.raises(RegistryError, match="unknown dataset id 'NOPE'"):
        registry.get("NOPE")


def test_filters() -> None:
    registry = Registry.load()
    breast = registry.filter(organ="breast")
    assert {e.id for e in breast} >= {"BUS-BRA", "BUSI", "STU-Hospital"}
    assert all(e.modality == "volume" for e in registry.filter(modality="volume"))
    assert {e.id for e in registry.filter(access="credentials")} == {"AbdomenUS", "CardiacUDC", "EchoCP", "US-Nerve-Seg"}


def test_user_directories_add_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    write_entry(first, minimal_entry("PrivA"))
    write_entry(second, minimal_entry("PrivB"))
    monkeypatch.setenv("US43D_REGISTRY_PATH", str(first))
    registry = Registry.load([second])
    assert "privA" in registry and "PRIVB" in registry
    assert len(registry) == 45


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"modality": "film"}, "modality"),
        ({"organ": "Breast Tissue"}, "organ"),
        ({"categories": []}, "categories"),
        ({"colour": "red"}, "colour"),
        ({"modality": "volume"}, "(top level)"),
        ({"test_split": {"kind": "official"}}, "test_split"),
        ({"sources": [{"kind": "zenodo", "location": "1", "files": [{"name": "a.zip", "md5": "xyz"}]}]}, "sources.0.files.0.md5"),
        ({"id": "A" * 65}, "id"),
        ({"classes": ["benign", "benign"]}, "classes"),
        ({"classes": ["benign"]}, "classes"),
        ({"converter": "../../etc/evil"}, "converter"),
        ({"sources": [{"kind": "http", "location": "https://x.org/a.zip", "contents": ["/abs/*"]}]}, "sources.0.contents"),
        ({"sources": [{"kind": "http", "location": "https://x.org/a.zip", "contents": ["../*"]}]}, "sources.0.contents"),
    ],
)
def test_invalid_entry_names_file_and_field(tmp_path: Path, changes: dict, field: str) -> None:
    path = write_entry(tmp_path, minimal_entry(**changes))
    with pytest.raises(RegistryError) as info:
        Registry.load([tmp_path])
    message = str(info.value)
    assert str(path) in message
    assert f"field '{field}'" in message


def test_missing_required_field_and_bad_yaml(tmp_path: Path) -> None:
    entry = minimal_entry()
    del entry["licence"]
    write_entry(tmp_path, entry)
    with pytest.raises(RegistryError, match="field 'licence'"):
        Registry.load([tmp_path])
    (tmp_path / "MyPrivate.yaml").write_text("id: [unclosed")
    with pytest.raises(RegistryError, match="not valid YAML"):
        Registry.load([tmp_path])


def test_duplicate_ids_and_file_name_mismatch_are_refused(tmp_path: Path) -> None:
    write_entry(tmp_path / "dup", minimal_entry("bus-bra"))
    with pytest.raises(RegistryError, match="already defined"):
        Registry.load([tmp_path / "dup"])
    write_entry(tmp_path / "odd", minimal_entry("Other"), name="Different")
    with pytest.raises(RegistryError, match="does not match the file name"):
        Registry.load([tmp_path / "odd"])


def test_missing_registry_directory(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="does not exist"):
        Registry.load([tmp_path / "nowhere"])


def test_datasets_md_is_generated_and_fresh() -> None:
    expected = render_datasets_md(Registry.load())
    current = (ROOT / "DATASETS.md").read_text()
    assert current == expected, "DATASETS.md is stale: run `us43d docs`"
    for dataset_id in REFERENCE_IDS:
        assert f"## {dataset_id}\n" in current


def test_digest_changes_with_content(tmp_path: Path) -> None:
    write_entry(tmp_path, minimal_entry())
    a = Registry.load([tmp_path]).digest()
    write_entry(tmp_path, minimal_entry(licence="CC BY 4.0"))
    assert Registry.load([tmp_path]).digest() != a


def test_every_builtin_entry_says_what_was_verified_on_real_files() -> None:
    registry = Registry.load()
    for entry in registry:
        assert entry.verified.real_files or entry.verified.documentation_only, entry.id
    levels = {e.id: e.verified.level for e in registry}
    assert levels["HC18"] == levels["BUS-UCLM"] == "real files" and levels["FASS"] == "documentation"
    assert "| real files | off |" in render_datasets_md(registry)


def test_cleaning_defaults_follow_the_modality_and_entries_can_switch_it() -> None:
    registry = Registry.load()
    assert not registry.get("HC18").cleans_background  # image
    assert registry.get("CAMUS").cleans_background and registry.get("regPro").cleans_background  # video, volume
    assert registry.get("DDTI").cleans_background and registry.get("DDTI").cleaning.note  # switched on, with why


def test_a_converter_outside_us43d_runs_only_when_its_package_is_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry entry is a YAML file anyone can hand over; naming a module in it must not be
    enough to run that module's code."""
    from helpers import build, make_stu_hospital, private_entry, write_entries

    package = tmp_path / "code" / "handedover"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    marker = tmp_path / "imported"
    (package / "reader.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "from us43d.converters.stu_hospital import list_items, read_item  # noqa: F401\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    registry = write_entries(tmp_path / "registry", private_entry("Handed", converter="handedover.reader", min_area=1))
    make_stu_hospital(tmp_path / "raw" / "Handed", n=2)
    monkeypatch.delenv("US43D_TRUSTED_CONVERTERS", raising=False)
    refused = build(tmp_path / "raw", tmp_path / "out", ["Handed"], registry_dirs=[registry])
    assert not marker.exists()
    assert "set US43D_TRUSTED_CONVERTERS=handedover" in refused.problems[0]["reason"]
    monkeypatch.setenv("US43D_TRUSTED_CONVERTERS", "someother,handedover")
    trusted = build(tmp_path / "raw", tmp_path / "out", ["Handed"], registry_dirs=[registry])
    assert marker.exists() and trusted.reports["Handed"].images == 2


def test_builtin_entries_name_builtin_converters() -> None:
    assert all("." not in entry.converter for entry in Registry.load(include_builtin=True, extra_dirs=[]))
