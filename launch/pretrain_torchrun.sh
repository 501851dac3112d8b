#!/usr/bin/env bash
# Single node, N processes (one per GPU; on CPU any N, gloo):
#   launch/pretrain_torchrun.sh configs/pretrain/base.yaml data.shards=/data/shards [--resume auto]
#   NPROC=2 launch/pretrain_torchrun.sh configs/pretrain/debug.yaml data.shards=DIR
# Every argument goes to `specaware pretrain` unchanged (configs, key=value overrides, flags).
set -euo pipefail
if [[ -z "${NPROC:-}" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    NPROC=$(nvidia-smi -L | wc -l)
  else
    NPROC=1
  fi
fi
PYTHON=${PYTHON:-python}
# one CPU thread per process unless the caller chose otherwise (N processes share the cores)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "$PYTHON" -m torch.distributed.run --standalone --nnodes 1 --nproc_per_node "$NPROC" \
  -m specaware.training "$@"
