#!/usr/bin/env bash
# Mirror a MAST selection with Slurm: one job writes the shared plan file, then an array of
# SHARDS tasks (0 to SHARDS-1) fetches it, each task its own shard, once the plan succeeded.
#
# Usage:  SHARED=/scratch/$USER/mast [SHARDS=8] ./submit.sh SELECTION...
#   e.g.  SHARED=/scratch/$USER/mast SHARDS=16 ./submit.sh --program 2731 --suffix cal,i2d
# Partition, account and the like: sbatch reads SBATCH_PARTITION, SBATCH_ACCOUNT, ... from the
# environment.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
: "${SHARED:?set SHARED to a folder on shared storage that every node mounts}"
SHARDS=${SHARDS:-8}
MASTFETCH=${MASTFETCH:-mastfetch}
export SHARED SHARDS MASTFETCH

if [ "$#" -eq 0 ]; then
  echo "usage: SHARED=DIR [SHARDS=N] $0 SELECTION... (e.g. --program 2731 --suffix cal)" >&2
  exit 2
fi
if ! [[ "$SHARDS" =~ ^[0-9]+$ ]] || [ "$SHARDS" -lt 1 ]; then
  echo "SHARDS must be a positive number (got '$SHARDS')" >&2
  exit 2
fi
mkdir -p "$SHARED"

# The selection is passed to the plan script as its arguments: no shell re-parses it.
plan_job=$(sbatch --parsable --export=ALL \
  --output="$SHARED/mastfetch-plan-%j.out" \
  "$here/mastfetch-plan.sbatch" "$@")
plan_job=${plan_job%%;*}
echo "plan job: $plan_job"

# Array tasks are numbered from 0: SLURM_ARRAY_TASK_ID is the shard index.
array_job=$(sbatch --parsable --export=ALL \
  --dependency="afterok:$plan_job" \
  --array="0-$((SHARDS - 1))" \
  --output="$SHARED/mastfetch-%A_%a.out" \
  "$here/mastfetch-array.sbatch")
array_job=${array_job%%;*}
echo "array job: $array_job ($SHARDS shards, tasks 0-$((SHARDS - 1)))"
echo "Follow it:  squeue -j $array_job;  sacct -j $array_job --format=JobID,State,ExitCode"
echo "Check it:   $MASTFETCH verify $SHARED/mirror"
