from pathlib import Path

import numpy as np
from scipy import ndimage

from helpers import built_instances, ellipse, write_pair


def test_fake_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    folder = tmp_path / "raw" / "HC18" / "training_set"
    truth = {}
    for stem in ("001_HC", "002_HC", "002_2HC", "003_HC", "004_HC"):
        head = ellipse((54, 80), (27, 40), (18, 25))
        outline = head & ~ndimage.binary_erosion(head)  # the release draws the ellipse as a line
        write_pair(rng, folder / f"{stem}.png", folder / f"{stem}_Annotation.png", shape=(54, 80), mask=outline)
        truth[stem] = head
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "HC18")
    assert result.item_errors == [] and result.reports["HC18"].images == 5
    ((category, split, group, mask),) = found["training_set/002_2HC.png"]
    assert category == "fetal head" and group == "002"
    np.testing.assert_array_equal(mask, truth["002_2HC"])  # filled, not the outline
    assert found["training_set/002_HC.png"][0][1] == split  # one examination, one split


def test_outlines_cut_open_by_the_border_are_closed_along_it(tmp_path: Path, rng: np.random.Generator) -> None:
    """As 186_HC, 346_HC, 628_2HC and 787_HC are: the head runs out of the image, its outline
    ends on the border twice, and filling it as it is would leave the thin ring."""
    folder = tmp_path / "raw" / "HC18" / "training_set"
    shape = (54, 80)
    for stem, centre in (("186_HC", (44, 40)), ("346_HC", (8, 30))):
        head = ellipse(shape, centre, (18, 25))  # crosses the bottom (186) or the top (346) border
        outline = head & ~ndimage.binary_erosion(head, border_value=1)  # no outline along the image edge
        write_pair(rng, folder / f"{stem}.png", folder / f"{stem}_Annotation.png", shape=shape, mask=outline)
        result, found = built_instances(tmp_path / "raw", tmp_path / stem, "HC18")
        ((_, _, _, mask),) = found[f"training_set/{stem}.png"]
        np.testing.assert_array_equal(mask, head)
        (folder / f"{stem}.png").unlink()
        (folder / f"{stem}_Annotation.png").unlink()
