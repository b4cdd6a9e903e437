"""Run the original coco-analyze on a GT file and a keypoint results file and print its numbers as JSON.

This script holds no coco-analyze code: it imports an installed checkout of it (github.com/matteorr/coco-analyze,
whose `pycocotools` package is that project's own fork) and calls its public API the way its analysis scripts do.
It runs under that checkout's Python (numpy 1.23.5; see tests/fixtures/README.md for the build), not under
kpbench's, and imports nothing from kpbench.

    REF_PYTHON tests/coco_analyze_reference.py --coco-analyze DIR GT.json RESULTS.json > out.json

What it records (every AP as coco-analyze's summarize() gives it: per area range and OKS threshold, the mean of
the 101 interpolated precisions, "auc" in its stats, and the recall):
- the input cut of run_analysis.py: each image's top 20 results by score, in that order;
- "alone": analysisAPI/errorsAPImpact.py's runs: each keypoint error type corrected alone (`params.err_types =
  [err]`, analyze(check_kpts=True, check_scores=False, check_bckgd=False)), the score alone (analyze(False, True,
  False)) and the background alone (analyze(False, False, True): "background_fp" removes false positives,
  "background_fp_fn" also ignores false negatives);
- "cumulative": summarize() after analyze() with every check and the four error types (its own sequence: miss,
  + swap, + inversion, + jitter, + score, + background FP, + background FN);
- "counts": analysisAPI/localizationErrors.py's run (area "all" only): per keypoint the good, jitter, inversion,
  swap and miss keypoints of the detections matched at OKS 0.1, and each matched detection's classes;
- the optimal scores (after soft-NMS) and the background sets per area range of the score and background runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import sys
from pathlib import Path

CLASSES = ("good", "jitter", "inversion", "swap", "miss")
KEYPOINT_ERRORS = ("miss", "swap", "inversion", "jitter")
# errorsAPImpact.py's (and Params' default) area ranges and OKS thresholds.
AREAS = ([32**2, 1e5**2], [32**2, 96**2], [96**2, 1e5**2])
AREA_LABELS = ("all", "medium", "large")
OKS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
STEP_NAMES = {"bckgd_false_pos": "background_fp", "false_neg": "background_fn"}


def top_results(results: list[dict], image_ids: set) -> tuple[list[dict], list[int]]:
    """run_analysis.py's input: per image (in order of first appearance), its results sorted by descending score
    (a stable sort), the first 20; and each kept result's index in the results file."""
    by_image: dict = {}
    for index, r in enumerate(results):
        by_image.setdefault(r["image_id"], []).append(index)
    kept: list[int] = []
    for image_id, indices in by_image.items():
        if image_id in image_ids:
            kept.extend(sorted(indices, key=lambda i: -results[i]["score"])[:20])
    return [dict(results[i]) for i in kept], kept


def stats_by_step(stats: list[dict], rename: dict[str, str] | None = None) -> dict:
    """{step: {area: {"ap_by_oks": [10 values, OKS ascending], "recall_by_oks": [...]}}} from summarize()'s stats."""
    out: dict = {}
    for s in stats:
        step = (rename or {}).get(s["err"], STEP_NAMES.get(s["err"], s["err"]))
        area = out.setdefault(step, {}).setdefault(s["areaRngLbl"], {})
        area.setdefault("by_oks", {})[float(s["oks"])] = (float(s["auc"]), float(s["recall"]))
    for areas in out.values():
        for area in areas.values():
            by_oks = area.pop("by_oks")
            area["ap_by_oks"] = [by_oks[o][0] for o in OKS]
            area["recall_by_oks"] = [by_oks[o][1] for o in OKS]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco-analyze", required=True, type=Path, help="the coco-analyze checkout (built)")
    parser.add_argument("gt", type=Path)
    parser.add_argument("results", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(args.coco_analyze.resolve()))
    import numpy as np
    from pycocotools.coco import COCO
    from pycocotools.cocoanalyze import COCOanalyze

    gt_data = json.loads(args.gt.read_text())
    results = json.loads(args.results.read_text())
    split, result_index = top_results(results, {i["id"] for i in gt_data["images"]})
    log = io.StringIO()  # coco-analyze prints its progress on stdout

    def new_analyzer() -> COCOanalyze:
        coco_gt = COCO(str(args.gt))
        coco_dt = coco_gt.loadRes([dict(d) for d in split])
        analyzer = COCOanalyze(coco_gt, coco_dt, "keypoints")
        analyzer.params.areaRng = [list(a) for a in AREAS]
        analyzer.params.areaRngLbl = list(AREA_LABELS)
        analyzer.params.oksThrs = list(OKS)
        analyzer.cocoEval.params.useGtIgnore = 0
        analyzer.cocoEval.params.gtIgnoreIds = []
        return analyzer

    def result_of(dt_id: int) -> int:
        return result_index[dt_id - 1]  # loadRes numbers the results 1, 2, ... in order

    def optimal_scores(analyzer: COCOanalyze) -> dict:
        return {label: {str(result_of(c["id"])): float(c["opt_score"]) for c in analyzer.corrected_dts[label]}
                for label in AREA_LABELS}

    def flags(sets: list) -> dict:
        """{member: "0110..."}: per OKS threshold (ascending), whether it is in that threshold's set."""
        members = sorted(set().union(*sets))
        return {str(m): "".join("1" if m in s else "0" for s in sets) for m in members}

    def background_sets(analyzer: COCOanalyze) -> dict:
        """Per area range: the background false positives (results file positions) and false negatives (GT ids)."""
        return {label: {"fp_results": flags([{result_of(d) for d in analyzer.false_pos_dts[label, str(o)]}
                                             for o in OKS]),
                        "fn_gt_ids": flags([{int(g) for g in analyzer.false_neg_gts[label, str(o)]} for o in OKS])}
                for label in AREA_LABELS}

    out: dict = {
        "reference": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "coco_analyze": str((args.coco_analyze / "COMMIT").read_text().strip()
                                if (args.coco_analyze / "COMMIT").exists() else "unknown"),
        },
        "inputs": {"gt": args.gt.name, "results": args.results.name, "num_results": len(results),
                   "num_analysed": len(split), "analysed_results": result_index},
        "area_ranges": {label: list(a) for label, a in zip(AREA_LABELS, AREAS)},
        "oks_thresholds": list(OKS),
    }
    with contextlib.redirect_stdout(log):
        # errorsAPImpact.py: each correction alone.
        alone: dict = {}
        for err in KEYPOINT_ERRORS:
            analyzer = new_analyzer()
            analyzer.params.err_types = [err]
            analyzer.analyze(check_kpts=True, check_scores=False, check_bckgd=False)
            analyzer.summarize(makeplots=False)
            steps = stats_by_step(analyzer.stats)
            out["baseline"] = steps["baseline"]
            alone[err] = steps[err]
        analyzer = new_analyzer()
        analyzer.params.err_types = []
        analyzer.analyze(check_kpts=False, check_scores=True, check_bckgd=False)
        analyzer.summarize(makeplots=False)
        alone["score"] = stats_by_step(analyzer.stats)["score"]
        score_alone = optimal_scores(analyzer)
        analyzer = new_analyzer()
        analyzer.params.err_types = []
        analyzer.analyze(check_kpts=False, check_scores=False, check_bckgd=True)
        analyzer.summarize(makeplots=False)
        steps = stats_by_step(analyzer.stats, {"false_neg": "background_fp_fn"})
        alone["background_fp"] = steps["background_fp"]
        alone["background_fp_fn"] = steps["background_fp_fn"]
        background_alone = background_sets(analyzer)

        # COCOanalyze's own sequence: everything, cumulatively.
        analyzer = new_analyzer()
        analyzer.params.err_types = list(KEYPOINT_ERRORS)
        analyzer.analyze(check_kpts=True, check_scores=True, check_bckgd=True)
        analyzer.summarize(makeplots=False)
        cumulative = stats_by_step(analyzer.stats)
        cumulative.pop("baseline")
        score_cumulative = optimal_scores(analyzer)
        background_cumulative = background_sets(analyzer)

        # localizationErrors.py: the counts, area "all" alone.
        analyzer = new_analyzer()
        analyzer.params.areaRng = [list(AREAS[0])]
        analyzer.params.areaRngLbl = ["all"]
        analyzer.analyze(check_kpts=True, check_scores=False, check_bckgd=False)
        matches = analyzer.localization_matches["all", str(analyzer.params.oksLocThrs), "dts"]
        names = analyzer.params.kpts_name
        per_keypoint = {name: dict.fromkeys(CLASSES, 0) for name in names}
        matched = []
        for cdt in analyzer.corrected_dts["all"]:
            if "good" not in cdt:
                continue
            classes = ["-"] * len(names)
            for c in CLASSES:
                for j, flag in enumerate(cdt[c]):
                    if flag:
                        per_keypoint[names[j]][c] += 1
                        classes[j] = c[0]
            matched.append({"result": result_of(cdt["id"]), "gt_id": int(matches[cdt["id"]][0]["gtId"]),
                            "classes": "".join(classes)})
    out["alone"] = alone
    out["cumulative"] = cumulative
    out["counts"] = {"per_keypoint": per_keypoint,
                     "total": {c: sum(row[c] for row in per_keypoint.values()) for c in CLASSES},
                     "matched": sorted(matched, key=lambda m: m["result"])}
    out["optimal_scores"] = {"alone": score_alone, "cumulative": score_cumulative}
    out["background"] = {"alone": background_alone, "cumulative": background_cumulative}
    sys.stdout.write(readable_json(out) + "\n")


def readable_json(value: object, depth: int = 0) -> str:
    """JSON with one key per line and every list of numbers or strings on one line (a diffable fixture)."""
    pad = " " * (depth + 1)
    if isinstance(value, dict) and value:
        items = [f"{pad}{json.dumps(str(k))}: {readable_json(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return "[\n" + ",\n".join(pad + readable_json(v, depth + 1) for v in value) + "\n" + " " * depth + "]"
    return json.dumps(value)


if __name__ == "__main__":
    main()
