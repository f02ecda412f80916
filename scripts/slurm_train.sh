#!/bin/bash
# Data-parallel training on a SLURM cluster: one torchrun per node, one process per GPU.
# Chapter 10. Usage (from the repository root, with the environment activated):
#
#   sbatch --nodes=2 --gpus-per-node=4 scripts/slurm_train.sh mnist_cond [--steps N ...]
#
# torchrun starts one process per GPU of the allocation on each node (SLURM_GPUS_ON_NODE;
# GPUS_PER_NODE overrides it); they meet at the first node of the allocation, on a port
# derived from the job id (MASTER_PORT overrides it), and train with
# DistributedDataParallel on the nccl backend. Two minutes before the time limit SLURM
# sends USR1; the script then requeues the job, which resumes from runs/NAME/state (the
# last save; at most checkpoint_every steps are lost).
#SBATCH --job-name=dmlib-train
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=01:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
set -euo pipefail
CONFIG=${1:?usage: sbatch scripts/slurm_train.sh CONFIG [python -m dmlib.train options]}
shift
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
GPUS=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
PORT=${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}
# the CPU cores of the task, shared by the processes of the node
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( ${SLURM_CPUS_PER_TASK:-$GPUS} / GPUS > 0 ? ${SLURM_CPUS_PER_TASK:-$GPUS} / GPUS : 1 ))}
requeue() {
    echo "[slurm_train] time limit near: requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
}
trap requeue USR1
echo "[slurm_train] $SLURM_NNODES node(s) x $GPUS process(es), rendezvous at $HEAD:$PORT"
# in the background, so that the shell can run the trap when USR1 arrives
srun torchrun \
    --nnodes="$SLURM_NNODES" \
    --nproc_per_node="$GPUS" \
    --rdzv_id="$SLURM_JOB_ID" \
    --rdzv_backend=c10d \
    --rdzv_endpoint="$HEAD:$PORT" \
    -m dmlib.train "$CONFIG" "$@" &
wait $!
