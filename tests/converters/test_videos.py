"""Fake EchoNet-Dynamic, EchoNet-Pediatric and brachial plexus videos, thyroid cine clips (HDF5)."""

import shutil
from pathlib import Path

import h5py
import numpy as np

from helpers import built_instances, ellipse, jpeg_truth, write_pair, write_video


def frames(rng: np.random.Generator, count: int, shape=(48, 64)) -> list[np.ndarray]:
    return [np.dstack([rng.integers(20, 230, shape, dtype=np.uint8)] * 3) for _ in range(count)]


def test_echonet_dynamic(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "EchoNet-Dynamic" / "EchoNet-Dynamic"
    rows = ["FileName,X1,Y1,X2,Y2,Frame"]
    for name in ("0X1A", "0X2B", "0X3C"):
        write_video(root / "Videos" / f"{name}.avi", frames(rng, 8))
        for frame in (2, 6):
            rows.append(f"{name}.avi,30,5,30,40,{frame}")  # long axis, dropped
            rows += [f"{name}.avi,20,{y},40,{y},{frame}" for y in (10, 20, 30)]  # chords
    rows.append("0X9Z.avi,1,1,2,2,0")  # a tracing whose video is missing
    rows += ["0X3C,30,5,30,40,7", "0X3C,20,10,40,10,7", "0X3C,20,20,40,20,7"]  # a FileName without .avi
    (root / "VolumeTracings.csv").write_text("\n".join(rows) + "\n")
    (root / "FileList.csv").write_text("FileName,EF,Split\n0X1A,50,TRAIN\n0X2B,60,VAL\n0X3C,55,TEST\n")
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "EchoNet-Dynamic")
    assert [e["reason"] for e in result.item_errors] == ["video named in VolumeTracings.csv is missing"]
    assert result.reports["EchoNet-Dynamic"].images == 7
    ((category, split, group, mask),) = found["EchoNet-Dynamic/Videos/0X3C.avi"][:1]
    assert (category, split, group) == ("left ventricle", "test", "0X3C")
    ventricle = np.zeros((48, 64), bool)
    ventricle[10:31, 20:41] = True  # chord ends on pixel centres: the corner pixels are inside, nothing beyond
    np.testing.assert_array_equal(mask, ventricle)
    frames_seen = (tmp_path / "out" / "coco" / "EchoNet-Dynamic" / "test.json").read_text()
    assert '"frame":2' in frames_seen and '"frame":6' in frames_seen and '"frame":7' in frames_seen


def test_echonet_pediatric(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "raw" / "EchoNet-Pediatric" / "pediatric_echo_avi" / "pediatric_echo_avi"
    square = [(10, 10), (40, 10), (40, 35), (10, 35)]
    names = {"A4C": ("CR32a95c7-CR32a9783-000064", "CR0000001-CR0000002-000003"), "PSAX": ("CR32a95c7-CR32a97ff-000012",)}
    for view, videos in names.items():
        rows = ["FileName,X,Y,Frame"]
        for name in videos:
            write_video(root / view / "Videos" / f"{name}.avi", frames(rng, 6))
            rows += [f"{name}.avi,{x},{y},3" for x, y in square]
            rows.append(f"{name}.avi,,,No Systolic")
        (root / view / "VolumeTracings.csv").write_text("\n".join(rows) + "\n")
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "EchoNet-Pediatric")
    assert result.item_errors == [] and result.reports["EchoNet-Pediatric"].images == 3
    ((category, split, group, mask),) = found["pediatric_echo_avi/pediatric_echo_avi/PSAX/Videos/CR32a95c7-CR32a97ff-000012.avi"]
    assert (category, group) == ("left ventricle", "CR32a95c7")  # the patient, across views
    (_, a4c_split, a4c_group, _) = found["pediatric_echo_avi/pediatric_echo_avi/A4C/Videos/CR32a95c7-CR32a9783-000064.avi"][0]
    assert (a4c_split, a4c_group) == (split, group)
    ventricle = np.zeros((48, 64), bool)
    ventricle[10:36, 10:41] = True
    np.testing.assert_array_equal(mask, ventricle)
    text = "".join(p.read_text() for p in (tmp_path / "out" / "coco" / "EchoNet-Pediatric").glob("*.json"))
    assert '"frame":3' in text and '"frame":2' not in text  # Frame is a 0-based index


def test_brachial_plexus(tmp_path: Path, rng: np.random.Generator) -> None:
    data = tmp_path / "raw" / "brachial-plexus" / "brachial_plexus-main" / "data"
    truth = {}
    for device, video in (("Butterfly", "b240"), ("Sonosite", "s005")):
        write_video(data / device / "videos" / f"{video}.mp4", frames(rng, 5))
        for i in range(4):  # the last frame has no mask
            truth[(video, i)] = write_pair(rng, None, data / device / "ac_masks" / video / f"{video}_{i:03d}.jpg", shape=(48, 64))
    needle = np.zeros((48, 64), bool)
    needle[5:8, 5:20] = True
    needle[5:8, 23:40] = True  # a line broken in two, as JPEG can leave a thin needle: still one needle
    needle[40, 60] = True  # a speck far from it: not part of the needle
    write_pair(rng, None, data / "Sonosite" / "needle" / "needle_masks" / "s005" / "s005_001.jpg", mask=needle)
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "brachial-plexus")
    assert result.item_errors == [] and result.reports["brachial-plexus"].images == 8
    rows = found["brachial_plexus-main/data/Sonosite/videos/s005.mp4"]
    assert {g for *_, g, _ in rows} == {"s005"} and len({s for _, s, _, _ in rows}) == 1
    needles = [m for c, *_, m in rows if c == "needle"]
    assert len(needles) == 1 and (needles[0] & needle).sum() / (needles[0] | needle).sum() > 0.9
    written = jpeg_truth(data / "Sonosite" / "needle" / "needle_masks" / "s005" / "s005_001.jpg")
    np.testing.assert_array_equal(needles[0], written & (np.arange(64) < 50)[None, :])  # the speck left out
    assert written[:, 50:].any()


def test_thyroid_cineclip(tmp_path: Path, rng: np.random.Generator) -> None:
    check_thyroid_cineclip(tmp_path, rng, padded=False)


def test_thyroid_cineclip_ids_padded_with_spaces_keep_their_clips(tmp_path: Path, rng: np.random.Generator) -> None:
    check_thyroid_cineclip(tmp_path, rng, padded=True)  # readers of the release strip the ids


def check_thyroid_cineclip(tmp_path: Path, rng: np.random.Generator, padded: bool) -> None:
    folder = tmp_path / "raw" / "Thyroid-US-Cineclip"
    folder.mkdir(parents=True)
    nodule = ellipse((40, 50), (20, 25), (8, 10))
    images = rng.integers(1, 255, (7, 40, 50), dtype=np.uint8)
    masks = np.zeros((7, 40, 50), np.uint8)
    masks[[0, 1, 3, 5]] = nodule
    with h5py.File(folder / "dataset.hdf5", "w") as handle:
        handle["image"] = images
        handle["mask"] = masks
        ids = [b"n1", b"n1", b"n1", b"n2", b"n2", b"n2", b"n2"]
        handle["annot_id"] = np.array([i.ljust(6) if padded else i for i in ids])
        handle["frame_num"] = np.array([0, 1, 2, 0, 1, 2, 3])
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "Thyroid-US-Cineclip")
    assert result.item_errors == [] and result.reports["Thyroid-US-Cineclip"].images == 4
    rows = found["dataset.hdf5"]
    assert {g for *_, g, _ in rows} == {"n1", "n2"}
    np.testing.assert_array_equal(rows[0][3], nodule)


def test_fast_u_net_and_regpro(tmp_path: Path, rng: np.random.Generator) -> None:
    import nibabel as nib

    dataset = tmp_path / "raw" / "Fast-U-Net" / "Fast-U-Net-main" / "Dataset"
    truth = {}
    for name in ("0001", "fa_0002"):
        truth[name] = write_pair(rng, dataset / "AC" / "image" / f"{name}.png", dataset / "AC" / "mask" / f"{name}.png")
    for stem in ("010_HC", "010_2HC"):
        truth[stem] = write_pair(
            rng, dataset / "HC" / "image" / f"{stem}.png", dataset / "HC" / "mask" / f"{stem}_Annotation.png"
        )
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "Fast-U-Net")
    assert result.item_errors == [] and result.reports["Fast-U-Net"].images == 4
    ((category, split, group, mask),) = found["Fast-U-Net-main/Dataset/HC/image/010_2HC.png"]
    assert (category, group) == ("fetal abdomen or head", "HC_010")
    np.testing.assert_array_equal(mask, truth["010_2HC"])

    root = tmp_path / "raw" / "regPro"
    for part in ("train", "val"):
        for case in ("case000001", "case000002"):
            image = rng.integers(0, 255, (5, 20, 24), dtype=np.uint8)
            labels = np.zeros((5, 20, 24, 2), np.uint8)
            labels[1:3, 5:15, 5:15, 0] = 1  # gland
            labels[2, 8:13, 8:13, 1] = 1  # a landmark inside it
            for folder, array in (("us_images", image), ("us_labels", labels), ("mr_images", image)):
                (root / part / folder).mkdir(parents=True, exist_ok=True)
                nib.save(nib.Nifti1Image(array, np.eye(4)), root / part / folder / f"{case}.nii.gz")
    result, found = built_instances(tmp_path / "raw", tmp_path / "out2", "regPro")
    assert result.item_errors == [] and result.reports["regPro"].images == 8 and result.reports["regPro"].instances == 12
    # a release with train/ only (the challenge leaves the val split to its users) is read as it is;
    # a part found twice (an archive extracted twice) is refused, not skipped (on a copy: the tree
    # above joins the all-datasets build as it is)
    other = tmp_path / "other" / "regPro"
    shutil.copytree(root, other)
    shutil.rmtree(other / "val")
    result, found = built_instances(tmp_path / "other", tmp_path / "out3", "regPro")
    assert result.item_errors == [] and result.reports["regPro"].images == 4
    shutil.move(other / "train", other / "once" / "train")
    shutil.copytree(other / "once" / "train", other / "again" / "train")
    result, found = built_instances(tmp_path / "other", tmp_path / "out4", "regPro")
    assert "several folders match 'train/us_images'" in str(result.errors) and not found


def test_echonet_cavity_on_the_sector_edge_is_kept_and_spill_is_cleaned(tmp_path: Path, rng: np.random.Generator) -> None:
    """A traced frame whose ventricle blood pool is black and opens onto the black outside of the
    sector (as on a real EchoNet-Dynamic frame): the field of view comes from all the frames of
    the video, so the cavity is kept whole; a tracing that runs past the sector is cut at its edge."""
    from us43d.corpus.field_of_view import image_field_of_view
    from us43d.demo import fan_mask

    shape = (80, 96)
    fan = fan_mask(*shape)
    rows_, cols_ = np.nonzero(fan)
    bottom = int(rows_.max())
    left = int(cols_[rows_ == bottom].min())  # where the sector's arc meets its left side
    top = bottom - 15
    cavity = np.zeros(shape, bool)
    cavity[top : bottom + 1, left : left + 14] = True
    cavity &= fan
    clip = []
    for index in range(10):
        grey = np.where(fan, np.clip(rng.rayleigh(60, shape), 30, 255), 0).astype(np.uint8)
        if index == 4:
            grey[cavity] = 0  # the traced frame: the pool is as black as the outside
        clip.append(np.dstack([grey] * 3))
    root = tmp_path / "raw" / "EchoNet-Dynamic" / "EchoNet-Dynamic"
    write_video(root / "Videos" / "0XAA.avi", clip, codec="ffv1")
    corners = [(left, top), (left + 13, top), (left + 13, bottom), (left, bottom)]
    spill = [(left - 8, 55), (left + 6, 55), (left + 6, 65), (left - 8, 65)]  # runs past the sector's side
    rows = ["FileName,X1,Y1,X2,Y2,Frame", f"0XAA.avi,{left},{top},{left},{bottom},4"]
    rows += [f"0XAA.avi,{a[0]},{a[1]},{b[0]},{b[1]},4" for a, b in ((corners[0], corners[1]), (corners[3], corners[2]))]
    rows += [f"0XAA.avi,{spill[0][0]},55,{spill[0][0]},65,6"]
    rows += [f"0XAA.avi,{a[0]},{a[1]},{b[0]},{b[1]},6" for a, b in ((spill[0], spill[1]), (spill[3], spill[2]))]
    (root / "VolumeTracings.csv").write_text("\n".join(rows) + "\n")
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "EchoNet-Dynamic")
    assert result.item_errors == []
    masks = {frame: mask for frame, mask in _frames_of(tmp_path / "out", "EchoNet-Dynamic").items()}
    pool = np.zeros(shape, bool)
    pool[top : bottom + 1, left : left + 14] = True
    assert masks[4][pool & fan].all() and not masks[4][~pool].any()  # nothing of the black cavity is cut
    one_frame = image_field_of_view(clip[4], lossy=True)
    assert np.count_nonzero(pool & fan & ~one_frame) > 10  # which that frame alone could not have told
    traced = np.zeros(shape, bool)
    traced[55:66, left - 8 : left + 7] = True
    assert masks[6][traced & fan].all() and not masks[6][~fan].any()  # cut at the sector's edge, nothing inside lost
    assert masks[6][traced & fan].all()


def _frames_of(out: Path, dataset: str) -> dict[int, np.ndarray]:
    from helpers import decode, load_json

    masks = {}
    for path in sorted((out / "coco" / dataset).glob("*.json")):
        doc = load_json(path)
        frames = {i["id"]: i["frame"] for i in doc["images"]}
        for annotation in doc["annotations"]:
            masks[frames[annotation["image_id"]]] = decode(annotation)
    return masks


def test_thyroid_cineclip_ids_that_are_not_text_are_refused_naming_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "raw" / "Thyroid-US-Cineclip"
    folder.mkdir(parents=True)
    with h5py.File(folder / "dataset.hdf5", "w") as handle:
        handle["image"] = np.zeros((1, 8, 8), np.uint8)
        handle["mask"] = np.zeros((1, 8, 8), np.uint8)
        handle["annot_id"] = np.array([b"\xff\xfe"])
    result, found = built_instances(tmp_path / "raw", tmp_path / "out", "Thyroid-US-Cineclip")
    assert not found and "annot_id holds bytes that are not text" in str(result.errors) and "dataset.hdf5" in str(result.errors)
