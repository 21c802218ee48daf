#!/usr/bin/env bash
# Single node, several GPUs, DeepSpeed launcher.
#   NUM_GPUS=8 scripts/train_deepspeed.sh configs/recipes/vicuna-7b-finetune.yaml training.output_dir=runs/7b-s2
# CPU ranks (no GPU): DS_ACCELERATOR=cpu NUM_GPUS=2 scripts/train_deepspeed.sh configs/tiny/pretrain.yaml deepspeed.config=zero2
# The DeepSpeed JSON comes from the config (deepspeed.config=zero2|zero2_offload|zero3|zero3_offload or a path).
# Threads per rank: OMP_NUM_THREADS = cores (CORES or nproc) ÷ NUM_GPUS unless you set it. DRY_RUN=1 prints the command.
set -euo pipefail
source "$(dirname "$0")/rank_threads.sh"
CONFIG=${1:?usage: $0 CONFIG.yaml [section.key=value ...]}
shift
NUM_GPUS=${NUM_GPUS:-8}
set_rank_threads "$NUM_GPUS"
launch deepspeed --num_gpus "$NUM_GPUS" --master_port "${MASTER_PORT:-29500}" \
    --module minigemini.train.run "$CONFIG" "$@"
