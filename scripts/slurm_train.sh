#!/bin/bash
# Data-parallel training on a SLURM cluster: one torchrun per node, one process per GPU.
# Chapter 10. Usage (from the repository root, with the environment activated):
#
#   sbatch --nodes=2 --gpus-per-node=4 scripts/slurm_train.sh mnist_cond [--steps N ...]
#
# torchrun starts GPUS_PER_NODE processes on each node (default: the GPUs nvidia-smi
# lists); they meet at the first node of the allocation (port MASTER_PORT, default
# 29500) and train with DistributedDataParallel on the nccl backend. A job that is
# requeued or restarted resumes from runs/NAME/state.
#SBATCH --job-name=dmlib-train
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=01:00:00
#SBATCH --requeue
set -euo pipefail
CONFIG=${1:?usage: sbatch scripts/slurm_train.sh CONFIG [python -m dmlib.train options]}
shift
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
GPUS=${GPUS_PER_NODE:-$(nvidia-smi -L | wc -l)}
PORT=${MASTER_PORT:-29500}
echo "[slurm_train] $SLURM_NNODES node(s) x $GPUS process(es), rendezvous at $HEAD:$PORT"
srun torchrun \
    --nnodes="$SLURM_NNODES" \
    --nproc_per_node="$GPUS" \
    --rdzv_id="$SLURM_JOB_ID" \
    --rdzv_backend=c10d \
    --rdzv_endpoint="$HEAD:$PORT" \
    -m dmlib.train "$CONFIG" "$@"
