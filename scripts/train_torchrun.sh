#!/usr/bin/env bash
# torchrun (one call per node). DeepSpeed still applies when the config sets deepspeed.config.
#   single node: NPROC=8 scripts/train_torchrun.sh configs/recipes/vicuna-7b-pretrain.yaml
#   node k of N: NNODES=N NODE_RANK=k MASTER_ADDR=node0 NPROC=8 scripts/train_torchrun.sh CONFIG.yaml
# CPU ranks: DS_ACCELERATOR=cpu NPROC=2 scripts/train_torchrun.sh configs/tiny/pretrain.yaml deepspeed.config=zero2
# Threads per rank: OMP_NUM_THREADS = cores (CORES or nproc) ÷ NPROC unless you set it. DRY_RUN=1 prints the command.
set -euo pipefail
source "$(dirname "$0")/rank_threads.sh"
CONFIG=${1:?usage: $0 CONFIG.yaml [section.key=value ...]}
shift
NPROC=${NPROC:-8}
set_rank_threads "$NPROC"
launch torchrun --nnodes "${NNODES:-1}" --node_rank "${NODE_RANK:-0}" --nproc_per_node "$NPROC" \
    --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29500}" \
    -m minigemini.train.run "$CONFIG" "$@"
