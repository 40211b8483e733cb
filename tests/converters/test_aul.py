import json
from pathlib import Path

import numpy as np

from helpers import built_instances, write_pair
from us43d.converters.readers import polygons_to_mask

LIVER = [[10, 10], [70, 10], [70, 50], [10, 50]]
MASS = [[30, 20], [45, 20], [40, 35]]


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    raw = tmp_path / "raw" / "AUL"
    for pathology, stems in (("Benign", ("1", "2")), ("Malignant", ("3",)), ("Normal", ("4",))):
        base = raw / pathology / pathology
        for stem in stems:
            write_pair(rng, base / "image" / f"{stem}.jpg", None)
            for structure, polygon in (("liver", LIVER), ("mass", MASS), ("outline", LIVER)):
                if structure == "mass" and pathology == "Normal":
                    continue
                (base / "segmentation" / structure).mkdir(parents=True, exist_ok=True)
                (base / "segmentation" / structure / f"{stem}.json").write_text(json.dumps(polygon))
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "AUL")
    assert result.item_errors == [] and result.reports["AUL"].images == 4 and result.reports["AUL"].instances == 11
    rows = {c: m for c, *_, m in found["Malignant/Malignant/image/3.jpg"]}
    assert set(rows) == {"liver", "liver mass", "scan sector"}
    np.testing.assert_array_equal(rows["liver mass"], polygons_to_mask([[v for p in MASS for v in p]], 60, 80, "m", "centres"))
    liver = np.zeros((60, 80), bool)
    liver[10:51, 10:71] = True  # vertices on pixel centres: the rectangle's corner pixels are in, nothing beyond
    np.testing.assert_array_equal(rows["liver"], liver)
    assert "liver mass" not in {c for c, *_ in found["Normal/Normal/image/4.jpg"]}
