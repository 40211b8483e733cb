"""Fake clips and sweeps for ACOUSLIC (MetaImage stacks), CardiacUDC and EchoCP (NIfTI clips), ASUS (NumPy)."""

from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from helpers import built_instances, ellipse


def test_acouslic(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "ACOUSLIC" / "acouslic-ai-train-set"
    (root / "images" / "stacked_fetal_ultrasound").mkdir(parents=True)
    (root / "masks" / "stacked_fetal_abdomen").mkdir(parents=True)
    (root / "circumferences").mkdir()
    abdomen = ellipse((30, 40), (15, 20), (8, 10))
    for uuid in ("aaa", "bbb", "ccc"):
        frames = rng.integers(1, 255, (12, 30, 40), dtype=np.uint8)  # (frames, rows, cols) as SimpleITK gives it
        masks = np.zeros((12, 30, 40), np.uint8)
        masks[3][abdomen] = 1  # optimal plane
        masks[7][abdomen] = 2  # sub-optimal plane
        sitk.WriteImage(sitk.GetImageFromArray(frames), str(root / "images" / "stacked_fetal_ultrasound" / f"{uuid}.mha"))
        sitk.WriteImage(sitk.GetImageFromArray(masks), str(root / "masks" / "stacked_fetal_abdomen" / f"{uuid}.mha"))
    (root / "circumferences" / "fetal_abdominal_circumferences_per_sweep.csv").write_text(
        "uuid,subject_id,sweep_1_ac_mm\naaa,1,100\nbbb,1,101\nccc,2,99\n"
    )
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "ACOUSLIC")
    assert result.item_errors == [] and result.reports["ACOUSLIC"].images == 6
    rows = found["acouslic-ai-train-set/images/stacked_fetal_ultrasound/bbb.mha"]
    assert {(c, g) for c, _, g, _ in rows} == {("fetal abdomen", "1")} and len(rows) == 2
    np.testing.assert_array_equal(rows[0][3], abdomen)
    assert len({rows[0][1], found["acouslic-ai-train-set/images/stacked_fetal_ultrasound/aaa.mha"][0][1]}) == 1


def test_cardiac_udc_fills_contours_and_drops_slips(tmp_path: Path, rng: np.random.Generator) -> None:
    """Names as the release has them: `patient1-4`, `patient-1-4`, `normal-23-4` (the last number is
    the view), `.nii.gz` and `.nii`, videos without a label file, label values meaning per view."""
    root = tmp_path / "raw" / "CardiacUDC" / "cardiacUDC_dataset"
    ventricle = ellipse((40, 50), (20, 25), (10, 12))
    outline = ventricle & ~ndimage.binary_erosion(ventricle)

    def clip(folder: str, video: str, suffix: str = ".nii.gz", value: int = 1, labelled: bool = True) -> None:
        (root / folder).mkdir(parents=True, exist_ok=True)
        frames = rng.integers(1, 255, (50, 40, 4), dtype=np.uint8)  # (x, y, t)
        nib.save(nib.Nifti1Image(frames, np.eye(4)), root / folder / f"{video}_image{suffix}")
        if not labelled:
            return
        labels = np.zeros((50, 40, 4), np.uint8)
        labels[..., 0] = outline.T * value  # a contour-only frame
        labels[..., 1] = ventricle.T * value
        labels[0, 0, 2] = value  # one stray pixel: below 2.5 % of the frame
        nib.save(nib.Nifti1Image(labels, np.eye(4)), root / folder / f"{video}_label{suffix}")

    clip("Site_G_100", "patient1-4")
    clip("Site_G_20", "patient-1-4", suffix=".nii", value=2)  # another patient 1; view 4: 2 = left atrium
    clip("Site_G_20", "patient-1-2")  # view 2: 1 = pulmonary artery
    clip("Site_R_73", "normal-23-4", labelled=False)
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "CardiacUDC")
    report = result.reports["CardiacUDC"]
    assert result.item_errors == [] and (report.images, report.unannotated) == (6, 1)
    rows = found["cardiacUDC_dataset/Site_G_100/patient1-4_image.nii.gz"]
    assert {(c, g) for c, _, g, _ in rows} == {("left ventricle", "Site_G_100/patient1")}
    np.testing.assert_array_equal(rows[0][3], ventricle[::-1, ::-1])  # filled and turned 180 degrees
    atrium = found["cardiacUDC_dataset/Site_G_20/patient-1-4_image.nii"]
    artery = found["cardiacUDC_dataset/Site_G_20/patient-1-2_image.nii.gz"]
    assert {(c, g) for c, _, g, _ in atrium} == {("left atrium", "Site_G_20/patient-1")}
    assert {(c, g) for c, _, g, _ in artery} == {("pulmonary artery", "Site_G_20/patient-1")}
    assert len({s for rows in (atrium, artery) for _, s, _, _ in rows}) == 1  # one patient, one split


def test_echocp(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "EchoCP" / "EchoCP_dataset"
    root.mkdir(parents=True)
    for case in ("01_rest", "01_valsalva", "02_rest"):
        video = rng.integers(1, 255, (30, 20, 5), dtype=np.uint8)
        labels = np.zeros((30, 20, 5), np.uint8)
        labels[5:15, 5:10, 1] = 1
        labels[18:25, 12:17, 1] = 3  # a second chamber: merged into the one class
        nib.save(nib.Nifti1Image(video, np.eye(4)), root / f"{case}_image.nii.gz")
        nib.save(nib.Nifti1Image(labels, np.eye(4)), root / f"{case}_label.nii.gz")
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "EchoCP")
    assert result.item_errors == [] and result.reports["EchoCP"].images == 3 and result.reports["EchoCP"].instances == 6
    assert {c for rows in found.values() for c, *_ in rows} == {"cardiac chamber"}
    rows = found["EchoCP_dataset/02_rest_image.nii.gz"]
    assert {g for *_, g, _ in rows} == {"02_rest"}
    expected = np.zeros((20, 30), bool)
    expected[5:10, 5:15] = True  # labels[5:15, 5:10] in (x, y), as rows = y, then turned 180 degrees
    assert any(np.array_equal(m, expected[::-1, ::-1]) for *_, m in rows)


def test_asus(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "ASUS" / "ASUS" / "DataArrays"
    root.mkdir(parents=True)
    bone = np.zeros((32, 32), bool)
    bone[20:24, 4:28] = True
    for scan in ("q000", "q001"):
        frames = rng.random((5, 32, 32, 1)).astype(np.float16)
        masks = np.zeros((5, 32, 32, 1), np.uint8)
        masks[2, ..., 0] = bone
        masks[4, ..., 0] = bone
        np.save(root / f"{scan}_ultrasound.npy", frames)
        np.save(root / f"{scan}_segmentation.npy", masks)
        # what the authors' exporter writes beside them (a name sorting after "ultrasound" too)
        np.save(root / f"{scan}_indices.npy", np.arange(5))
        np.save(root / f"{scan}_transform.npy", np.tile(np.eye(4), (5, 1, 1)))
    np.save(root / "q001_voxels.npy", np.zeros(3))  # a name sorting after "ultrasound": reported, not taken
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "ASUS")
    assert [(e["file"], e["reason"]) for e in result.item_errors] == [
        ("ASUS/DataArrays/q001_voxels.npy", "an array named neither q<NNN>_ultrasound.npy nor q<NNN>_segmentation.npy")
    ]
    assert result.reports["ASUS"].images == 4
    ((category, _, group, mask),) = found["ASUS/DataArrays/q001_ultrasound.npy"][:1]
    assert (category, group) == ("spine", "q001")
    np.testing.assert_array_equal(mask, bone[::-1, ::-1])
