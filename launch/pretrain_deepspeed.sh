#!/usr/bin/env bash
# Multi-node with the deepspeed launcher (passwordless ssh to every host of the hostfile):
#   HOSTFILE=hostfile launch/pretrain_deepspeed.sh configs/pretrain/base.yaml data.shards=/shared/shards
# hostfile lines: "node01 slots=8". MASTER_ADDR defaults to the first host of the hostfile.
# checkpoint.run_dir must be on a file system every node sees (the checkpoint rename is atomic
# there). Every argument goes to `specaware pretrain` unchanged.
set -euo pipefail
HOSTFILE=${HOSTFILE:-hostfile}
if [[ ! -f "$HOSTFILE" ]]; then
  echo "error: hostfile '$HOSTFILE' not found; set HOSTFILE=path (lines like 'node01 slots=8')" >&2
  exit 2
fi
MASTER_ADDR=${MASTER_ADDR:-$(awk 'NF && $1 !~ /^#/ {print $1; exit}' "$HOSTFILE")}
MASTER_PORT=${MASTER_PORT:-29500}
DEEPSPEED=${DEEPSPEED:-deepspeed}
# --no_local_rank: ranks come from the environment the launcher sets (LOCAL_RANK, RANK, ...)
exec "$DEEPSPEED" --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
  --no_local_rank --module specaware.training "$@"
