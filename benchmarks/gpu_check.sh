#!/usr/bin/env bash
# GPU check, for the day a GPU is at hand (< 5 min on one H100/H200-class GPU). Installs nothing: run it in a
# checkout where `make install` (or `pip install -e .`) was done.
#   1. the bf16 training step of a ~1B-parameter random-init Mini-Gemini (SDPA / flash attention):
#      step time, tokens/s and MFU against the GPU's published bf16 peak (benchmarks/gpu_check.py);
#   2. a 2-step ZeRO-2 run through `minigemini train` and the DeepSpeed launcher (tiny model, synthetic data).
#
#   bash benchmarks/gpu_check.sh                 # on a GPU machine
#   GPU_CHECK_CPU=1 bash benchmarks/gpu_check.sh # the CPU fallback path (tiny sizes; what the tests run)
# Environment: PYTHON (default .venv/bin/python, else python3), PEAK_TFLOPS (an unlisted GPU's bf16 peak),
# GPU_CHECK_OUT (work folder, default a temporary one).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
BIN=$(dirname "$("$PYTHON" -c 'import sys; print(sys.executable)')")
OUT=${GPU_CHECK_OUT:-$(mktemp -d)}
mkdir -p "$OUT"

if [ "${GPU_CHECK_CPU:-0}" = "1" ] || ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "== no GPU (or GPU_CHECK_CPU=1): CPU fallback path, tiny sizes, no MFU claim"
    DEVICE=cpu SIZE=tiny STEPS=2
    export DS_ACCELERATOR=cpu OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
    DEVICE=cuda SIZE=1b STEPS=10
fi

echo "== 1/2 bf16 train step ($SIZE model on $DEVICE)"
"$PYTHON" benchmarks/gpu_check.py --device "$DEVICE" --size "$SIZE" --steps "$STEPS" \
    ${PEAK_TFLOPS:+--peak-tflops "$PEAK_TFLOPS"}

echo "== 2/2 two ZeRO-2 steps through minigemini train + the deepspeed launcher"
"$BIN/minigemini" prep synthetic "$OUT/data" --num-train 8 --num-test 2 > "$OUT/prep.log" 2>&1 \
    || { cat "$OUT/prep.log"; exit 1; }
PRECISION=bf16
[ "$DEVICE" = cpu ] && PRECISION=fp32
"$BIN/deepspeed" --num_gpus 1 --master_port "${MASTER_PORT:-29531}" --module minigemini.train.run \
    configs/tiny/pretrain.yaml deepspeed.config=configs/deepspeed/zero2.json \
    "data.train=[$OUT/data/captions.json]" "model.tiny.dir=$OUT/tiny_base" "training.output_dir=$OUT/zero2" \
    training.max_steps=2 training.per_device_train_batch_size=2 training.save_strategy=no \
    "training.report_to=[]" training.precision=$PRECISION > "$OUT/zero2.log" 2>&1 \
    || { tail -40 "$OUT/zero2.log"; echo "gpu_check: the ZeRO-2 run failed (log $OUT/zero2.log)"; exit 1; }
grep "training done" "$OUT/zero2.log" || { echo "gpu_check: no summary line in $OUT/zero2.log"; exit 1; }
echo "gpu_check: OK (ZeRO-2 log $OUT/zero2.log)"
