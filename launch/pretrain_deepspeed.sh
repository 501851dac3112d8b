#!/usr/bin/env bash
# The deepspeed launcher. Multi-node (passwordless ssh to every host of the hostfile):
#   HOSTFILE=hostfile launch/pretrain_deepspeed.sh configs/pretrain/base.yaml data.shards=/shared/shards
# hostfile lines: "node01 slots=8". MASTER_ADDR defaults to the first host of the hostfile.
# checkpoint.run_dir must be on a file system every node sees (the checkpoint rename is atomic
# there). Single node (no HOSTFILE set and no ./hostfile): NPROC processes on this machine
# (default: one per visible GPU, else 1; on CPU any N runs with gloo):
#   NPROC=2 launch/pretrain_deepspeed.sh configs/pretrain/debug.yaml data.shards=DIR
# Every argument goes to `specaware pretrain` unchanged.
set -euo pipefail
DEEPSPEED=${DEEPSPEED:-deepspeed}
MASTER_PORT=${MASTER_PORT:-29500}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# --no_local_rank: ranks come from the environment the launcher sets (LOCAL_RANK, RANK, ...)
if [[ -z "${HOSTFILE:-}" && ! -f hostfile ]]; then
  if [[ -z "${NPROC:-}" ]]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
      NPROC=$(nvidia-smi -L | wc -l)
    else
      NPROC=1
    fi
  fi
  exec "$DEEPSPEED" --num_nodes 1 --num_gpus "$NPROC" --master_port "$MASTER_PORT" \
    --no_local_rank --module specaware.training "$@"
fi
HOSTFILE=${HOSTFILE:-hostfile}
if [[ ! -f "$HOSTFILE" ]]; then
  echo "error: hostfile '$HOSTFILE' not found; set HOSTFILE=path (lines like 'node01 slots=8'), or unset it for a single node" >&2
  exit 2
fi
MASTER_ADDR=${MASTER_ADDR:-$(awk 'NF && $1 !~ /^#/ {print $1; exit}' "$HOSTFILE")}
exec "$DEEPSPEED" --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
  --no_local_rank --module specaware.training "$@"
