#!/usr/bin/env bash
# One-shot performance check on a machine with an NVIDIA GPU (issue 14). Installs nothing,
# downloads nothing (random weights everywhere), runs in well under 8 minutes on a recent GPU
# plus a few for the foundation backbones (3b-3c; building their random weights takes most of
# that), and writes every figure into ONE summary file:
#
#   1. training step, reference sizes: straightforward fp32 vs fast fp32 vs fast bf16, with
#      max_memory_allocated                                  (scripts/bench_train.py)
#   2. HDF5 DataLoader samples/s (3 modalities, B=128, 2 workers) (bench_train.py --dataloader)
#   3. extraction frames/s: RAFT flow, Faster R-CNN, and the TSN backbones (ResNet-50; the
#      BNInception one when this checkout has it)             (scripts/bench_extract.py)
#   3b. frozen foundation backbones (extra [backbones]): features/s per family side by side at
#      fp32 and bf16 (the README "Modern backbones" rows), each with the library's preprocessing
#      and with --rgb.preprocessing tensor (preprocess/s alone and features/s end to end), GFLOP
#      per feature and the hours of EK100's sparse features at the measured rate
#                                                      (scripts/bench_extract.py --backbones)
#   3c. rulstm-extract end to end with a video model (VideoMAE, configs/extract/videomae.yaml,
#      causal 16-frame clips) on a 2 s clip, and the written file's backbone record
#   4. the online step, fp32 and bf16 weights on the GPU        (scripts/bench_online.py)
#   5. a short `rulstm fit --trainer.devices 1` on generated features, fp32 and bf16-mixed
#      (quick mode: one run at auto, i.e. bf16 only where it is native)
#
# Usage (from the repository root, in the project's environment):
#   bash scripts/gpu_check.sh [SUMMARY_FILE]        # default gpu_check_<host>_<date>.txt
#   GPU_CHECK_QUICK=1 bash scripts/gpu_check.sh     # tiny sizes: checks the script itself
#                                                     (runs on a CPU-only machine too)
# Each part has its own time limit (together 17 min 45 s at most, plus a few seconds of setup); a part
# that fails or times out is reported in the summary and the script goes on. Exit status: the
# number of failed parts.
set -u -o pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
QUICK=${GPU_CHECK_QUICK:-0}
SUMMARY=${1:-gpu_check_$(hostname -s)_$(date -u +%Y%m%dT%H%MZ).txt}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export WANDB_MODE=disabled PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
FAILED=0

if [ "$QUICK" = 1 ]; then
    DEVICE=$($PYTHON -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
    SIZES=small
    # A loaded CPU is slower than a GPU at these parts; the test suite raises the scale further
    # (its parts check that commands run, not how fast).
    LIMIT_SCALE=${GPU_CHECK_LIMIT_SCALE:-3}
    # Tiny everything, no peak-memory subprocesses: only checks that every command runs.
    TRAIN_ARGS=(--sizes small --batch-size 4 --iters 1 --warmup 0 --no-memory)
    LOADER_ARGS=(--sizes small --batch-size 8 --iters 1 --repeats 1 --videos 1 --workers 0)
    EXTRACT_SECONDS=0.5; EXTRACT_FRAMES=2
    # Small frames, DIS instead of RAFT, the models alone (rulstm-extract end to end is what
    # the test suite runs): only checks that the commands run.
    EXTRACT_QUICK=(--decode.width 96 --decode.height 64 --obj.min_size 64 --obj.max_size 96 --flow.method dis --models_only)
    # Foundation backbones: tiny random models of each family (the script, not the speed).
    BACKBONE_ARGS=(--sizes test --repeat 1 --preprocessing library tensor)
    VIDEO_MODEL=tiny; VIDEO_EXTRACT=(--rgb.clip_length 4 --decode.width 96 --decode.height 64 --num_workers 0 --batch_size 4)
    ONLINE_ARGS=(--hidden 32 --classes 20 --steps 3 --warmup 1)
    FIT_EPOCHS=1; FIT_DIM=32; FIT_ARGS=(--model.net.init_args.hidden 32 --data.num_workers 0)
    # One run at auto: bf16 only where it is native (emulated bf16 on a CPU is many times
    # slower than float32, and nn.LSTM has no bf16 kernel there).
    FIT_PRECISIONS=(auto)
else
    DEVICE=cuda
    SIZES=reference
    LIMIT_SCALE=1
    TRAIN_ARGS=(--batch-size 128 --iters 10 --warmup 2)
    LOADER_ARGS=(--batch-size 128 --iters 20 --repeats 3)
    EXTRACT_SECONDS=8; EXTRACT_FRAMES=200
    EXTRACT_QUICK=()
    # The README rows, at the configs' GPU batch sizes.
    BACKBONE_ARGS=(--sizes tiny base --repeat 3 --batch 32 --clip_batch 8 --flops --ek100 --preprocessing library tensor)
    VIDEO_MODEL=base; VIDEO_EXTRACT=()
    ONLINE_ARGS=(--steps 200 --warmup 20)
    FIT_EPOCHS=3; FIT_DIM=1024; FIT_ARGS=()
    FIT_PRECISIONS=(32-true bf16-mixed)
fi

log() { echo "$*" | tee -a "$SUMMARY"; }

# run NAME SECONDS COMMAND...: runs with a time limit, output into the summary.
run() {
    local name=$1 limit=$(($2 * LIMIT_SCALE))
    shift 2
    log ""
    log "=== $name (limit ${limit} s) ==="
    log "\$ $*"
    local started=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$WORK/out.txt" 2>&1
    local code=$?
    if [ $code -eq 0 ]; then
        # Keep the figures, drop progress bars and library chatter.
        grep -v -E '^\s*$|it/s\]|s/it\]|Warning|warn\(' "$WORK/out.txt" | tail -n 60 >>"$SUMMARY"
    else
        FAILED=$((FAILED + 1))
        log "!!! $name FAILED (exit $code$([ $code -eq 124 ] && echo ', timed out')); last lines:"
        tail -n 15 "$WORK/out.txt" >>"$SUMMARY"
    fi
    log "--- $name: $((SECONDS - started)) s"
    return $code
}

: >"$SUMMARY"
log "gpu_check: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
log "load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a); CPUs: $(nproc)"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/GPU: /' | tee -a "$SUMMARY"
else
    log "GPU: nvidia-smi not found"
fi
$PYTHON - "$DEVICE" <<'EOF' 2>&1 | tee -a "$SUMMARY"
import sys

import torch

from epic_protocol.precision import device_description

cuda = torch.cuda.is_available()
bf16 = cuda and torch.cuda.is_bf16_supported()
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available: {cuda}, bf16: {bf16}")
print(device_description(sys.argv[1]))
EOF
if [ "$DEVICE" = cuda ] && ! $PYTHON -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
    log "no CUDA device visible to torch: nothing to check (GPU_CHECK_QUICK=1 checks the script on a CPU)"
    exit 1
fi

# 1. Training step (each variant's peak memory is printed with it).
run "training step ($SIZES sizes)" 90 \
    $PYTHON scripts/bench_train.py --device "$DEVICE" "${TRAIN_ARGS[@]}"

# 2. Data loading from HDF5 (the bound on GPU training when it is slower than the step).
run "HDF5 DataLoader" 60 \
    $PYTHON scripts/bench_train.py --skip-models --dataloader "$WORK/h5" --workers 2 "${LOADER_ARGS[@]}"

# 3. Extraction frames/s, random weights (nothing downloaded). RAFT + Faster R-CNN + ResNet-50
#    (the TSN-style backbone of configs/extract/default.yaml), then BNInception if present.
NO_WEIGHTS=(--rgb.weights none --flow.weights none --obj.weights none --flow.raft_weights none)
run "extraction: RAFT, Faster R-CNN, ResNet-50" 120 \
    $PYTHON scripts/bench_extract.py -c configs/extract/default.yaml --device "$DEVICE" \
    --flow.method raft_large "${NO_WEIGHTS[@]}" "${EXTRACT_QUICK[@]}" \
    --seconds "$EXTRACT_SECONDS" --max_frames "$EXTRACT_FRAMES"
if $PYTHON -c 'from feature_extraction.backbones import build_rgb_backbone as b; b(name="bninception", weights=None)' >/dev/null 2>&1; then
    run "extraction: BNInception (TSN) backbones" 60 \
        $PYTHON scripts/bench_extract.py -c configs/extract/default.yaml --device "$DEVICE" \
        --modalities rgb flow --rgb.backbone bninception --flow.backbone bninception \
        --flow.method raft_large "${NO_WEIGHTS[@]}" "${EXTRACT_QUICK[@]}" \
        --seconds "$EXTRACT_SECONDS" --max_frames "$EXTRACT_FRAMES"
else
    log ""
    log "=== extraction: BNInception (TSN) backbones ==="
    log "skipped: this checkout has no 'bninception' backbone in feature_extraction"
fi

# 3b. Foundation backbones side by side (random weights from the real architectures).
if $PYTHON -c 'import timm, open_clip, transformers' >/dev/null 2>&1; then
    run "extraction: foundation backbones" 420 \
        $PYTHON scripts/bench_extract.py --backbones --device "$DEVICE" "${BACKBONE_ARGS[@]}"

    # 3c. rulstm-extract with a video model: VideoMAE (base: the model type's default config, as
    #     videomae.yaml; quick: a tiny one), random weights, on a generated 2 s clip.
    VIDEO_DIR="$WORK/video_model"
    if $PYTHON - "$VIDEO_DIR" "$VIDEO_MODEL" <<'EOF' >>"$SUMMARY" 2>&1; then
import sys
from pathlib import Path

sys.path.insert(0, "scripts")
from bench_extract import synthetic_video

root = Path(sys.argv[1])
(root / "videos").mkdir(parents=True)
synthetic_video(root / "videos" / "clip.mp4", seconds=2.0)
if sys.argv[2] == "tiny":
    import transformers

    transformers.VideoMAEConfig(
        image_size=32, patch_size=8, num_frames=4, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64,
    ).save_pretrained(root / "videomae")
    transformers.VideoMAEVideoProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(root / "videomae")
EOF
        if [ "$VIDEO_MODEL" = tiny ]; then VIDEO_BACKBONE="hf:$VIDEO_DIR/videomae"; else VIDEO_BACKBONE=hf:videomae; fi
        run "extraction: video foundation backbone (videomae.yaml, rulstm-extract)" 180 \
            $PYTHON -m feature_extraction.cli -c configs/extract/videomae.yaml \
            --videos "$VIDEO_DIR/videos" --out "$VIDEO_DIR/out" --device "$DEVICE" \
            --rgb.backbone "$VIDEO_BACKBONE" --rgb.weights none --progress false "${VIDEO_EXTRACT[@]}" &&
            $PYTHON - "$VIDEO_DIR/out/rgb.h5" <<'EOF' 2>&1 | tee -a "$SUMMARY" || FAILED=$((FAILED + 1))
import json
import sys

import h5py
import numpy as np

with h5py.File(sys.argv[1], "r") as handle:
    features = handle["clip/features"][()]
    record = json.loads(handle.attrs["provenance"])["backbone"]
assert len(features) == 60 and np.isfinite(features).all(), features.shape
print(
    f"video model features: {features.shape[0]} x {features.shape[1]}, {record['backbone']}, "
    f"clip {record['clip_length']} frames stride {record['clip_stride']}, "
    f"precision {record['precision']}"
)
EOF
    else
        FAILED=$((FAILED + 1))
        log "!!! extraction: video foundation backbone: could not generate its inputs"
    fi
else
    log ""
    log "=== extraction: foundation backbones ==="
    log "skipped: the extra [backbones] (timm, open_clip_torch, transformers) is not installed"
fi

# 4. Online step (int8 is CPU only: fp32 and bf16 weights here).
run "online step" 45 \
    $PYTHON scripts/bench_online.py --device "$DEVICE" --extract_steps 0 \
    --precisions '[fp32, bf16]' "${ONLINE_ARGS[@]}"

# 5. A short real training run through the CLI, fp32 then bf16-mixed, on generated features.
FIT_DATA="$WORK/fit"
$PYTHON - "$FIT_DATA" "$FIT_DIM" <<'EOF' >>"$SUMMARY" 2>&1 || FAILED=$((FAILED + 1))
"""Random RGB features and a random split for a short `rulstm fit` (labels learnable from
the features, so the loss falls)."""
import sys
from pathlib import Path

import numpy as np

from epic_protocol import FeatureFileWriter

root = Path(sys.argv[1])
root.mkdir(parents=True)
rng = np.random.default_rng(0)
rows, classes, dim = [], 20, int(sys.argv[2])
with FeatureFileWriter(root / "rgb.h5", modality="rgb", dim=dim, fps=30.0) as writer:
    for video in range(8):
        labels = rng.integers(classes, size=60)
        values = rng.normal(scale=0.1, size=(3000, dim)).astype(np.float32)
        for k, label in enumerate(labels):
            start = 200 + 45 * k
            values[start - 120 : start, label] += 2.0
            rows.append((f"{video}_{k}", f"P01_{video:02d}", start, start + 30, label % 5, label // 5, label))
        writer.write_video(f"P01_{video:02d}", np.arange(1, 3001), values)
for split, part in (("train", rows[: len(rows) * 3 // 4]), ("val", rows[len(rows) * 3 // 4 :])):
    (root / f"{split}.csv").write_text("".join(",".join(map(str, r)) + "\n" for r in part))
print(f"generated {len(rows)} segments of {dim}-d RGB features in {root}")
EOF
for precision in "${FIT_PRECISIONS[@]}"; do
    RUN_DIR="$WORK/fit_runs_$precision"
    run "rulstm fit --trainer.devices 1 --trainer.precision $precision" 45 \
        $PYTHON -m rulstm.cli fit -c configs/ek55/base.yaml -c configs/ek55/rgb_anticipation.yaml \
        --data.features "{rgb: $FIT_DATA/rgb.h5}" --data.train_annotations "$FIT_DATA/train.csv" \
        --data.val_annotations "$FIT_DATA/val.csv" --data.actions null --data.num_workers 2 \
        --model.init_checkpoint null --model.net.init_args.num_classes 20 \
        --model.net.init_args.feat_dim "$FIT_DIM" "${FIT_ARGS[@]}" \
        --trainer.accelerator "$([ "$DEVICE" = cuda ] && echo gpu || echo cpu)" \
        --trainer.devices 1 --trainer.precision "$precision" --trainer.max_epochs "$FIT_EPOCHS" \
        --trainer.logger false --trainer.enable_progress_bar false \
        --trainer.enable_model_summary false --trainer.default_root_dir "$RUN_DIR" || continue
    # The run passed, so its best checkpoint must be there: say so plainly if it is not.
    if [ ! -f "$RUN_DIR/checkpoints/best.ckpt" ]; then
        FAILED=$((FAILED + 1))
        log "!!! rulstm fit ($precision) exited 0 but wrote no $RUN_DIR/checkpoints/best.ckpt"
        continue
    fi
    $PYTHON - "$RUN_DIR/checkpoints/best.ckpt" <<'EOF' 2>&1 | tee -a "$SUMMARY" || FAILED=$((FAILED + 1))
import sys

import torch

# A checkpoint this script has just written (weights_only=False: Lightning's callback states).
checkpoint = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
scores = [s.get("best_model_score") for k, s in checkpoint["callbacks"].items() if "ModelCheckpoint" in k]
print(f"best val/action/top5/1.00s: {float(scores[0]):.2f} % after epoch {checkpoint['epoch']}")
EOF
done

log ""
log "gpu_check finished: $FAILED part(s) failed; load average now $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"
log "summary: $SUMMARY"
exit "$FAILED"
