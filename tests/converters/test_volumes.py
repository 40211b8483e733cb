"""Fake volumes for MicroSeg, MUP, SegThy, CAMUS (NIfTI) and FH-PS-AOP (MetaImage)."""

from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from helpers import built_instances, decode, ellipse, load_json


def volume_pair(rng: np.random.Generator, shape=(6, 40, 50), labelled=(1, 2, 4), value=1):
    """(x, y, z) image and label volumes; sagittal slices x in `labelled` hold a blob."""
    image = rng.integers(1, 255, shape, dtype=np.uint8)
    label = np.zeros(shape, np.uint8)
    for x in labelled:
        label[x] = ellipse(shape[1:], (20, 25), (8, 10)).astype(np.uint8) * value
    return image, label


def save_nifti(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)


def test_microseg_and_mup(tmp_path: Path, rng: np.random.Generator) -> None:
    for dataset in ("MicroSeg", "MUP"):
        root = tmp_path / "raw" / dataset / "Micro_Ultrasound_Prostate_Segmentation_Dataset"
        for part, numbers in (("train", ("01", "02")), ("test", ("01",))):
            for n in numbers:
                image, label = volume_pair(rng)
                save_nifti(root / part / "micro_ultrasound_scans" / f"microUS_{part}_{n}.nii.gz", image)
                save_nifti(root / part / "expert_annotations" / f"expert_annotation_{part}_{n}.nii.gz", label)
        result, found = built_instances(tmp_path / "raw", tmp_path / f"out-{dataset}", dataset)
        assert result.item_errors == [] and result.reports[dataset].images == 9  # 3 labelled slices x 3 volumes
        rows = found["Micro_Ultrasound_Prostate_Segmentation_Dataset/test/micro_ultrasound_scans/microUS_test_01.nii.gz"]
        assert len(rows) == 3 and {(c, s, g) for c, s, g, _ in rows} == {("prostate", "test", "test_01")}
        np.testing.assert_array_equal(rows[0][3], label[1].T.astype(bool))
    image_doc = (tmp_path / "out-MUP" / "coco" / "MUP" / "test.json").read_text()
    assert '"frame":1' in image_doc and '"frame":4' in image_doc and '"frame":0' not in image_doc


def test_segthy(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "SegThy" / "US_volunteer_dataset" / "ground_truth_data"
    for name in ("001_P1_1_left", "001_P1_1_right", "002_P2_1_left"):
        image, label = volume_pair(rng, labelled=(2, 3))
        save_nifti(root / "US" / f"{name}_US.nii", image)
        save_nifti(root / "US_thyroid_label" / f"{name}.nii", label)
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "SegThy")
    assert result.item_errors == [] and result.reports["SegThy"].images == 6
    groups = {rows[0][2]: rows[0][1] for rows in found.values()}
    assert set(groups) == {"001", "002"}


def test_segthy_neck_labels_give_the_vessels_of_both_sides(tmp_path: Path, rng: np.random.Generator) -> None:
    """Labels that cover the neck, as readers of the release describe them: 1 thyroid, 2/4 the
    left/right carotid artery, 3/5 the left/right jugular vein."""
    root = tmp_path / "raw" / "SegThy" / "US_volunteer_dataset" / "ground_truth_data"
    image, label = volume_pair(rng, labelled=(2,))
    blobs = {
        value: ellipse(label.shape[1:], centre, (3, 3))
        for value, centre in ((2, (8, 8)), (3, (8, 40)), (4, (32, 8)), (5, (32, 40)))
    }
    for value, blob in blobs.items():
        label[2][blob] = value
    save_nifti(root / "US" / "003_P1_1_left_US.nii", image)
    save_nifti(root / "US_thyroid_label" / "003_P1_1_left.nii", label)
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "SegThy")
    assert result.item_errors == [] and result.reports["SegThy"].images == 1
    ((_, rows),) = found.items()
    by_category: dict[str, list[np.ndarray]] = {}
    for category, _, _, mask in rows:
        by_category.setdefault(category, []).append(mask)
    assert sorted((c, len(m)) for c, m in by_category.items()) == [("carotid artery", 2), ("jugular vein", 2), ("thyroid", 1)]
    for value, category in ((2, "carotid artery"), (4, "carotid artery"), (3, "jugular vein"), (5, "jugular vein")):
        assert any(np.array_equal(mask, blobs[value].T) for mask in by_category[category])
    label[2][blobs[5]] = 6  # a value no reader of the release names: the volume is refused, naming the file
    save_nifti(root / "US_thyroid_label" / "003_P1_1_left.nii", label)
    result, found = built_instances(tmp_path / "raw", tmp_path / "out6", "SegThy")
    assert [e["file"] for e in result.item_errors] == [
        "US_volunteer_dataset/ground_truth_data/US_thyroid_label/003_P1_1_left.nii"
    ]
    assert "unexpected values [6]" in result.item_errors[0]["reason"] and not found


def test_camus_sequences(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "CAMUS" / "CAMUS_public"
    for patient in ("patient0001", "patient0002", "patient0003"):
        for view in ("2CH", "4CH"):
            frames = rng.integers(1, 255, (50, 40, 5), dtype=np.uint8)  # (x, y, t)
            labels = np.zeros((50, 40, 5), np.uint8)
            labels[10:20, 5:15, :] = 1
            labels[25:35, 20:30, :] = 2
            labels[5:10, 30:38, :] = 3
            save_nifti(root / "database_nifti" / patient / f"{patient}_{view}_half_sequence.nii.gz", frames)
            save_nifti(root / "database_nifti" / patient / f"{patient}_{view}_half_sequence_gt.nii.gz", labels)
    (root / "database_split").mkdir()
    (root / "database_split" / "subgroup_testing.txt").write_text("patient0003\n")
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "CAMUS")
    assert result.item_errors == [] and result.reports["CAMUS"].images == 30  # every frame is annotated
    rows = found["CAMUS_public/database_nifti/patient0003/patient0003_4CH_half_sequence.nii.gz"]
    assert {s for _, s, _, _ in rows} == {"test"} and len(rows) == 15
    atrium = [m for c, *_, m in rows if c == "left atrium"][0]
    np.testing.assert_array_equal(atrium, (labels[..., 0] == 3).T)

    (root / "database_split" / "subgroup_testing.txt").unlink()  # a separate download, easily missed
    result, found = built_instances(tmp_path / "raw", tmp_path / "out-no-list", "CAMUS")
    assert [p["file"] for p in result.problems] == ["database_split/subgroup_testing.txt"]
    assert "official test list is missing" in result.problems[0]["reason"]
    assert {s for rows in found.values() for _, s, _, _ in rows} <= {"train", "val"}  # no split pretended
    (root / "database_split" / "subgroup_testing.txt").write_text("patient0003\n")  # the tree as released again


def test_fh_ps_aop(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "FH-PS-AOP" / "Pubic Symphysis-Fetal Head Segmentation and Angle of Progression"
    (root / "image_mha").mkdir(parents=True)
    (root / "label_mha").mkdir()
    for name in ("00001", "00002"):
        planes = rng.integers(1, 255, (3, 40, 60), dtype=np.uint8)  # three colour planes first, as released
        label = np.zeros((40, 60), np.uint8)
        label[5:15, 5:20] = 1
        label[20:35, 25:55] = 2
        sitk.WriteImage(sitk.GetImageFromArray(planes), str(root / "image_mha" / f"{name}.mha"))
        sitk.WriteImage(sitk.GetImageFromArray(label), str(root / "label_mha" / f"{name}.mha"))
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "FH-PS-AOP")
    assert result.item_errors == [] and result.reports["FH-PS-AOP"].instances == 4
    rows = {c: m for c, *_, m in found["Pubic Symphysis-Fetal Head Segmentation and Angle of Progression/image_mha/00002.mha"]}
    np.testing.assert_array_equal(rows["fetal head"], label == 2)
    np.testing.assert_array_equal(rows["pubic symphysis"], label == 1)


def cone(shape: tuple[int, int, int]) -> np.ndarray:
    """A scan region opening along the last axis (depth), as a 3D probe images it."""
    x, y, z = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]].astype(float)
    return np.hypot(x - shape[0] / 2, y - shape[1] / 2) <= 4 + 0.45 * z


def test_volume_labels_outside_the_scanned_cone_are_cleaned(tmp_path: Path, rng: np.random.Generator) -> None:
    """As in 3D ultrasound, where labels drawn or interpolated across slices spill outside the
    scanned cone: the pixels outside go, the gland inside is kept whole however dark it is."""
    shape = (24, 30, 36)
    scanned = cone(shape)
    image = np.where(scanned, rng.integers(30, 255, shape), 0).astype(np.uint8)
    x, y, z = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]]
    gland = (x - 12) ** 2 + (y - 24) ** 2 + (z - 14) ** 2 <= 7**2  # near the cone's side: part of it outside
    image[gland & scanned] = 2  # hypoechoic: darker than the tissue around it, still inside the scan
    root = tmp_path / "raw" / "MicroSeg" / "Micro_Ultrasound_Prostate_Segmentation_Dataset" / "train"
    save_nifti(root / "micro_ultrasound_scans" / "microUS_train_01.nii.gz", image)
    save_nifti(root / "expert_annotations" / "expert_annotation_train_01.nii.gz", gland.astype(np.uint8))
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "MicroSeg")
    report = result.reports["MicroSeg"]
    outside = int((gland & ~scanned).sum())
    assert outside > 100 and 0.9 * outside <= report.cleaned_pixels <= outside
    kept = np.zeros(shape, bool)  # the built slices put back into the volume (sagittal: x; rows = z, columns = y)
    for split in ("train", "val"):
        path = tmp_path / "out" / "coco" / "MicroSeg" / f"{split}.json"
        doc = load_json(path) if path.exists() else {"images": [], "annotations": []}
        frames = {i["id"]: i["frame"] for i in doc["images"]}
        for annotation in doc["annotations"]:
            kept[frames[annotation["image_id"]]] |= decode(annotation).T
    assert kept[gland & scanned].all()  # nothing inside the scan is lost
    assert not (kept & ~gland).any()
    assert int((gland & ~kept).sum()) == report.cleaned_pixels
