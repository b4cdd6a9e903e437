"""Golden outputs: run kpbench's commands on the real fixtures and print the sha256 of every file they write.

`python tests/golden/record.py OUT_DIR > tests/golden/golden.sha256` records them (it was run before the package was
split into stages, so the layout move is proven not to change a byte); tests/test_golden.py reruns the commands and
compares. The argv use today's spellings (`evaluate RUN_DIR`, `thresholds GT RES`; recorded with the old ones,
`evaluate --run RUN_DIR` and `thresholds --gt GT --results RES`, which still work). Files that hold times, paths or versions (manifest.json, PNGs with matplotlib's version) are left out.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
SAMPLE = SHARED / "coco_val2017_sample"
# (label, GT, results) pairs scored with evaluate and thresholds.
FIXTURES = (
    ("xtcoco", SHARED / "xtcocoapi_example_coco" / "example_coco_val.json", SHARED / "xtcocoapi_example_coco" / "example_coco_preds.json"),
    ("fce", SHARED / "fce_keypoints_1img" / "gt_dataset.json", SHARED / "fce_keypoints_1img" / "dt_dataset.json"),
    ("edge", SHARED / "kpbench_synthetic_edgecases" / "synth_gt.json", SHARED / "kpbench_synthetic_edgecases" / "synth_dt.json"),
)
RUN_IMAGE_IDS = "139,785,802,40083"
SKIPPED_SUFFIXES = (".png",)
SKIPPED_NAMES = ("manifest.json",)


def commands(out: Path) -> list[tuple[str, list[str]]]:
    """(name, argv) of every golden command; a name is also the folder its files go to, and its stdout file."""
    run_dir = out / "run"
    listed: list[tuple[str, list[str]]] = [
        ("run", ["run", "--coco-root", str(SAMPLE), "--weights", "none", "--image-ids", RUN_IMAGE_IDS,
                 "--min-size", "320", "--max-size", "533", "--device", "cpu", "--out", str(run_dir)]),
        ("run-keypoints", ["keypoints", str(run_dir), "--format", "csv"]),
        ("run-thresholds", ["thresholds", str(run_dir), "--format", "json", "--out", str(out / "run-thresholds")]),
        ("run-evaluate", ["evaluate", str(run_dir), "--format", "json"]),
    ]
    for label, gt, res in FIXTURES:
        for backend in ("pycocotools", "hotcoco"):
            listed.append((f"evaluate-{label}-{backend}", ["evaluate", str(gt), str(res), "--backend", backend,
                                                           "--format", "json", "--out", str(out / f"evaluate-{label}-{backend}")]))
        listed.append((f"thresholds-{label}", ["thresholds", str(gt), str(res), "--format", "json",
                                               "--out", str(out / f"thresholds-{label}")]))
    return listed


def run_all(out: Path) -> dict[str, str]:
    """Run every golden command under `out`; return {relative path: sha256} of the files and stdouts kept."""
    out.mkdir(parents=True, exist_ok=True)
    for name, argv in commands(out):
        done = subprocess.run([sys.executable, "-m", "kpbench", *argv], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"kpbench {' '.join(argv)} exited {done.returncode}: {done.stderr}")
        # stdout holds no paths for these formats, except run's summary, which is not kept.
        if name != "run":
            (out / f"{name}.stdout").write_text(done.stdout)
    digests = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.suffix not in SKIPPED_SUFFIXES and path.name not in SKIPPED_NAMES:
            digests[path.relative_to(out).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def main() -> None:
    out = Path(sys.argv[1])
    for relative, digest in run_all(out).items():
        print(f"{digest}  {relative}")


if __name__ == "__main__":
    main()
