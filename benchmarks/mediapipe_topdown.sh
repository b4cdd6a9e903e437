#!/bin/bash
# BlazePose (mediapipe 0.10.21) on the 35-image val2017 sample, each run scored by the same evaluator: whole image,
# and top-down on GT boxes and on YOLO11n-pose's boxes, with and without the flip test and rescoring + OKS-NMS
# (README, "Top-down models"). Usage, from the repository root:
#   benchmarks/mediapipe_topdown.sh MP_PYTHON YOLO_BOXES.json [OUT_DIR]
# MP_PYTHON: the python of mediapipe's own venv (numpy < 2, torch, torchvision; kpbench runs from this tree);
# YOLO_BOXES.json: COCO detection results of YOLO11n-pose on the sample, e.g. the bbox_results.json of
#   `kpbench run --model yolo --coco-root ../shared/data/coco_val2017_sample` made in the main environment.
set -euo pipefail
PY=${1:?the python of the mediapipe venv}
BOXES=${2:?a COCO detections file of YOLO11n-pose on the sample}
OUT=${3:-results/mediapipe_topdown}
SAMPLE=${KPBENCH_SAMPLE:-../shared/data/coco_val2017_sample}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
run() {
    local name=$1; shift
    echo "== $name: $*"
    "$PY" -m kpbench run --coco-root "$SAMPLE" --out "$OUT/$name" --overwrite --no-progress --device cpu \
        --no-analysis "$@" 2>&1 | grep -E "^(top-down|  person boxes|keypoints|bbox) " || true
}
run whole --model mediapipe
run gt --model mediapipe-crops --person-boxes gt
run gt_flip --model mediapipe-crops --person-boxes gt --flip-test
run gt_nms --model mediapipe-crops --person-boxes gt --rescore keypoint-mean --nms oks
run gt_flip_nms --model mediapipe-crops --person-boxes gt --flip-test --rescore keypoint-mean --nms oks
run yolo --model mediapipe-crops --person-boxes "$BOXES"
run yolo_nms --model mediapipe-crops --person-boxes "$BOXES" --rescore keypoint-mean --nms oks
run yolo_flip --model mediapipe-crops --person-boxes "$BOXES" --flip-test
run yolo_flip_nms --model mediapipe-crops --person-boxes "$BOXES" --flip-test --rescore keypoint-mean --nms oks
run yolo_flip_softnms --model mediapipe-crops --person-boxes "$BOXES" --flip-test --rescore keypoint-mean \
    --nms soft-oks-gaussian
