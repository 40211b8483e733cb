"""Group-aware, seeded train/val splitting.

Official test sets stay test. Of the rest, about 5 % of each dataset's images go to val, taken
as whole groups (patient, video, volume) so no group straddles train and val. Groups are
visited in an order fixed by a hash of (seed, dataset, group), so the split depends only on the
inputs, never on file-system or dict order.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

from us43d.corpus.records import SPLITS, ImageRecord
from us43d.corpus.writers import SplitRecord

VAL_FRACTION = 0.05


def _order(seed: int, dataset: str, group: str) -> str:
    return hashlib.sha256(f"{seed}\x00{dataset}\x00{group}".encode()).hexdigest()


def assign_splits(records: Sequence[ImageRecord], seed: int = 0, val_fraction: float = VAL_FRACTION) -> dict[str, str]:
    """Split of every record of one dataset, by key."""
    splits: dict[str, str] = {}
    groups: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        if record.official_split == "test":
            splits[record.key] = "test"
        else:
            groups[record.group].append(record)
    pool_size = sum(len(members) for members in groups.values())
    if not groups:
        return splits
    dataset = records[0].dataset
    order = sorted(groups, key=lambda g: _order(seed, dataset, g))
    target = max(1, math.ceil(val_fraction * pool_size))
    categories_of = {g: Counter({a.category for r in groups[g] for a in r.annotations}) for g in groups}
    train_categories: Counter[str] = Counter()
    for counts in categories_of.values():
        train_categories.update(counts)

    val: list[str] = []
    val_size = 0

    def keeps_categories(group: str) -> bool:
        return all(train_categories[c] - n > 0 for c, n in categories_of[group].items())

    def take(group: str) -> None:
        nonlocal val_size
        val.append(group)
        val_size += len(groups[group])
        train_categories.subtract(categories_of[group])

    if len(groups) > 1:
        # A group is taken while it does not overshoot the target by more than half, so one
        # huge video cannot swallow a dataset's validation share.
        limit = target + max(1, target // 2)
        for group in order:
            if val_size >= target:
                break
            if val_size + len(groups[group]) <= limit and keeps_categories(group):
                take(group)
        if not val:
            # Every group is large: take the smallest, keeping categories in train if any can.
            by_size = sorted(order, key=lambda g: len(groups[g]))
            candidates = [g for g in by_size if keeps_categories(g)] or by_size
            take(candidates[0])
    taken = set(val)
    for group, members in groups.items():
        split = "val" if group in taken else "train"
        for record in members:
            splits[record.key] = split
    return splits


def split_rows(records: Mapping[str, Sequence[ImageRecord]], seed: int) -> tuple[list[SplitRecord], dict[str, dict[str, int]]]:
    """Every record of every dataset with its split, in dataset then key order, and the counts
    per dataset: what the build writes, and what `us43d validate` expects to find."""
    rows: list[SplitRecord] = []
    counts: dict[str, dict[str, int]] = {}
    for dataset_id, dataset_records in records.items():
        splits = assign_splits(dataset_records, seed=seed)
        tally = Counter(splits.values())
        counts[dataset_id] = {s: tally.get(s, 0) for s in SPLITS}
        rows.extend(SplitRecord(r, splits[r.key]) for r in dataset_records)
    return rows, counts
