from __future__ import annotations

from collections import defaultdict

from us43d.corpus.records import AnnotationRecord, ImageRecord
from us43d.corpus.split import assign_splits


def record(key: str, group: str, category: str = "a", test: bool = False) -> ImageRecord:
    return ImageRecord(
        "DS",
        key,
        f"DS/{key}.png",
        10,
        10,
        f"{key}.png",
        None,
        group,
        "test" if test else None,
        (AnnotationRecord(category, "", (0, 0, 1, 1), 1),),
    )


def test_official_test_stays_and_groups_never_straddle() -> None:
    records = [record(f"{g}_{i}", f"p{g}", test=g < 5) for g in range(60) for i in range(3)]
    splits = assign_splits(records, seed=0)
    assert all(splits[r.key] == "test" for r in records if r.official_split == "test")
    by_group = defaultdict(set)
    for r in records:
        by_group[r.group].add(splits[r.key])
    assert all(len(s) == 1 for s in by_group.values())
    val = sum(1 for s in splits.values() if s == "val")
    pool = sum(1 for r in records if r.official_split is None)
    assert 0.05 * pool <= val <= 0.05 * pool * 1.5 + 3


def test_deterministic_and_seeded() -> None:
    records = [record(f"k{i}", f"g{i // 2}") for i in range(200)]
    assert assign_splits(records, 0) == assign_splits(list(reversed(records)), 0)
    assert assign_splits(records, 0) != assign_splits(records, 1)


def test_at_least_one_val_image_and_a_huge_group_does_not_swallow_val() -> None:
    records = [record("a", "g1"), record("b", "g2")]
    splits = assign_splits(records)
    assert sorted(splits.values()) == ["train", "val"]
    big = [record(f"v{i}", "video") for i in range(90)] + [record(f"s{i}", f"single{i}") for i in range(10)]
    splits = assign_splits(big)
    assert all(splits[f"v{i}"] == "train" for i in range(90))
    assert 5 <= sum(1 for s in splits.values() if s == "val") <= 8


def test_rare_categories_stay_in_train() -> None:
    records = [record(f"k{i}", f"g{i}", category="common") for i in range(40)]
    records.append(record("rare", "g_rare", category="rare"))
    for seed in range(20):
        assert assign_splits(records, seed)["rare"] == "train"


def test_single_group_goes_to_train() -> None:
    records = [record(f"k{i}", "only") for i in range(5)]
    assert set(assign_splits(records).values()) == {"train"}
