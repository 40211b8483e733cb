"""Cost of field-of-view cleaning on sequences, against the build without it.

    python benchmarks/field_of_view.py [--volumes 3] [--shape 160 192 224]

Builds the same synthetic 3D scans (speckle inside a cone, a label that spills outside it) as a
MicroSeg tree twice, cleaning on (the volume default) and off, in one process, and prints both
times and what the cleaning removed. Also times the estimate alone: one 2D frame, the maximum of
a 2D+t sequence, and a 3D hull with its per-slice planes.
Goal: cleaning adds at most 25 % to a volume dataset's build.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml

from us43d.corpus.build import BuildOptions, build_corpus
from us43d.corpus.field_of_view import VolumeFieldOfView, image_field_of_view, sequence_field_of_view
from us43d.registry import Registry


def scan(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    x, y, z = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]].astype(np.float32)
    cone = np.hypot(x - shape[0] / 2, y - shape[1] / 2) <= 8 + 0.4 * z
    image = np.where(cone, rng.integers(20, 255, shape, dtype=np.uint8), 0).astype(np.uint8)
    label = (x - shape[0] / 2) ** 2 + (y - shape[1] * 0.8) ** 2 + (z - shape[2] / 2) ** 2 <= (shape[0] / 5) ** 2
    return image, label.astype(np.uint8)


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volumes", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=3, default=(160, 192, 224))
    args = parser.parse_args()
    shape = tuple(args.shape)
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="us43d-fov-"))
    try:
        image, label = scan(rng, shape)
        frame = np.ascontiguousarray(image[:, :, shape[2] // 2])
        image_field_of_view(frame, False)  # imports and first-call costs out of the way
        seconds, _ = timed(image_field_of_view, frame, False)
        print(f"one frame {frame.shape}: {seconds * 1000:.1f} ms")
        seconds, _ = timed(sequence_field_of_view, image, 2, False)
        print(f"sequence of {shape[2]} frames {shape[:2]}: {seconds * 1000:.0f} ms")
        seconds, volume = timed(VolumeFieldOfView.estimate, image)
        planes = time.perf_counter()
        for index in range(shape[0]):
            volume.plane(0, index, shape[1:])
        print(f"volume {shape}: hull {seconds:.2f} s, {shape[0]} slice planes {time.perf_counter() - planes:.2f} s")

        root = work / "raw" / "MicroSeg" / "Micro_Ultrasound_Prostate_Segmentation_Dataset" / "train"
        for folder in ("micro_ultrasound_scans", "expert_annotations"):
            (root / folder).mkdir(parents=True)
        for n in range(1, args.volumes + 1):
            image, label = scan(rng, shape)
            nib.save(nib.Nifti1Image(image, np.eye(4)), root / "micro_ultrasound_scans" / f"microUS_train_{n:02d}.nii.gz")
            nib.save(nib.Nifti1Image(label, np.eye(4)), root / "expert_annotations" / f"expert_annotation_train_{n:02d}.nii.gz")
        registry = Registry.load()
        entry = registry.get("MicroSeg").model_dump(mode="json", exclude_none=True)
        entry.pop("verified", None)
        entry["id"] = entry["name"] = "MicroSeg-off"
        entry["cleaning"] = {"background_overlap": False}
        (work / "registry").mkdir()
        (work / "registry" / "MicroSeg-off.yaml").write_text(yaml.safe_dump(entry))
        (work / "raw" / "MicroSeg-off").symlink_to(work / "raw" / "MicroSeg")
        both = Registry.load([work / "registry"])
        options = BuildOptions(workers=1, progress=False)
        results = {}
        for dataset in ("MicroSeg-off", "MicroSeg"):
            seconds, result = timed(build_corpus, both, work / "raw", work / f"out-{dataset}", [dataset], options)
            report = result.reports[dataset]
            results[dataset] = seconds
            print(
                f"build {dataset:<13} {seconds:6.2f} s: {report.images} slices, {report.instances} instances, "
                f"{report.cleaned_pixels} px cleaned from {report.cleaned_instances} instances"
            )
        print(f"cleaning adds {100 * (results['MicroSeg'] / results['MicroSeg-off'] - 1):.0f} % to the build")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
