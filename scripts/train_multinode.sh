#!/usr/bin/env bash
# Several nodes with a DeepSpeed hostfile (one line per node: "hostname slots=GPUS"; see hostfile.example).
# Run on the first node; it starts the ranks on every host over passwordless ssh (pdsh if installed).
#   HOSTFILE=scripts/hostfile MASTER_ADDR=node1 scripts/train_multinode.sh configs/recipes/yi-34b-finetune.yaml
# Every node needs the same code, environment and data paths (a shared filesystem is simplest).
# Threads per rank: DeepSpeed passes only .deepspeed_env (in ~ or here) to the other nodes; put a line
# OMP_NUM_THREADS=<cores per node ÷ slots per node> there (scripts/rank_threads.sh: per_rank_threads SLOTS CORES).
set -euo pipefail
CONFIG=${1:?usage: $0 CONFIG.yaml [section.key=value ...]}
shift
exec deepspeed --hostfile "${HOSTFILE:-scripts/hostfile}" \
    --master_addr "${MASTER_ADDR:?set MASTER_ADDR to the address of the first node}" --master_port "${MASTER_PORT:-29500}" \
    --module minigemini.train.run "$CONFIG" "$@"
