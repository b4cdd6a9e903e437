"""Run xtcocotools' COCOeval on a COCO-WholeBody GT file and a whole-body results file, one evaluation per part,
and print the ten stats of each part as JSON.

This script holds no xtcocotools code: it imports an installed xtcocotools (jin-s13/xtcocoapi, `pip install
xtcocotools` in a venv of its own) and calls it as COCO-WholeBody's evaluation and mmpose's CocoWholeBodyMetric do:
`COCOeval(gt, dt, "keypoints_" + part, sigmas[part], use_area=True)`, evaluate, accumulate, summarize. Its
`_prepare` skips, per part, a detection whose scores in that part are all 0 (`k = np.count_nonzero(d[2::3] > 0)`;
`if k == 0: continue`): the rule kpbench's `--wholebody` follows. It imports nothing from kpbench.

    XTCOCOTOOLS_PYTHON tests/xtcocotools_reference.py GT.json RESULTS.json > stats.json
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import warnings

import numpy as np

# COCO-WholeBody's 133 sigmas by part, as its evaluation script lists them (body 0:17, foot 17:23, face 23:91,
# left hand 91:112, right hand 112:133); passed in as an argument (argv[3], a JSON list) so that this script and
# kpbench take them from one place.
PARTS = (("body", 0, 17), ("foot", 17, 23), ("face", 23, 91), ("lefthand", 91, 112), ("righthand", 112, 133),
         ("wholebody", 0, 133))


def main() -> None:
    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    gt_path, results_path, sigmas_json = sys.argv[1:4]
    sigmas = np.array(json.loads(sigmas_json))
    out = {}
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "'score' not found, use 'score' instead": no per-part scores
        gt = COCO(gt_path)
        dt = gt.loadRes(results_path)
        for name, start, stop in PARTS:
            evaluation = COCOeval(gt, dt, f"keypoints_{name}", sigmas[start:stop], use_area=True)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
            out[f"keypoints_{name}"] = [float(s) for s in evaluation.stats]
    from importlib.metadata import version

    print(json.dumps({"evaluator": f"xtcocotools {version('xtcocotools')}, numpy {np.__version__}", "stats": out}))


if __name__ == "__main__":
    main()
