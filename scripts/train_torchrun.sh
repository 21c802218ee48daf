#!/usr/bin/env bash
# torchrun (one call per node). DeepSpeed still applies when the config sets deepspeed.config.
#   single node: NPROC=8 scripts/train_torchrun.sh configs/recipes/vicuna-7b-pretrain.yaml
#   node k of N: NNODES=N NODE_RANK=k MASTER_ADDR=node0 NPROC=8 scripts/train_torchrun.sh CONFIG.yaml
# CPU ranks: DS_ACCELERATOR=cpu NPROC=2 scripts/train_torchrun.sh configs/tiny/pretrain.yaml deepspeed.config=zero2
set -euo pipefail
CONFIG=${1:?usage: $0 CONFIG.yaml [section.key=value ...]}
shift
exec torchrun --nnodes "${NNODES:-1}" --node_rank "${NODE_RANK:-0}" --nproc_per_node "${NPROC:-8}" \
    --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29500}" \
    -m minigemini.train.run "$CONFIG" "$@"
