#!/usr/bin/env bash
# Mirror a MAST selection with AWS Batch: register the job definition, submit one job that
# writes the shared plan file, then an array job of SHARDS children that each fetch their shard
# (AWS Batch sets AWS_BATCH_JOB_ARRAY_INDEX; mastfetch reads it as the shard index).
#
# Usage:  JOB_QUEUE=my-queue [SHARDS=8] ./submit.sh SELECTION...
#   e.g.  JOB_QUEUE=mastfetch-queue SHARDS=16 ./submit.sh --program 2731 --suffix cal,i2d
#         JOB_QUEUE=mastfetch-queue ./submit.sh s3://stpubdata/jwst/public/jw02731/
# Edit job-definition.json first: image URI and EFS file system id (see README.md).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
: "${JOB_QUEUE:?set JOB_QUEUE to the name or ARN of your AWS Batch job queue}"
SHARDS=${SHARDS:-8}
PLAN=/mnt/shared/plan.jsonl

if [ "$#" -eq 0 ]; then
  echo "usage: JOB_QUEUE=QUEUE [SHARDS=N] $0 SELECTION... (e.g. --program 2731 --suffix cal)" >&2
  exit 2
fi
# An AWS Batch array has 2 to 10,000 children.
if ! [[ "$SHARDS" =~ ^[0-9]+$ ]] || [ "$SHARDS" -lt 2 ] || [ "$SHARDS" -gt 10000 ]; then
  echo "SHARDS must be a number from 2 to 10000 (got '$SHARDS')" >&2
  exit 2
fi
if grep -q -e '123456789012' -e 'fs-0123456789abcdef0' "$here/job-definition.json"; then
  echo "job-definition.json still holds the example image URI or file system id: edit it first" >&2
  exit 2
fi
command -v aws >/dev/null || { echo "this script needs the AWS CLI (aws)" >&2; exit 2; }

# A JSON string, for the command override (selection items may hold quotes or backslashes).
json_str() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

definition=$(aws batch register-job-definition \
  --cli-input-json "file://$here/job-definition.json" \
  --query jobDefinitionArn --output text)
echo "job definition: $definition"

# The plan job: the same image, its command replaced by `mastfetch plan` into a temporary name
# that is renamed when complete, so that no shard can read half a plan. The selection reaches
# `sh -c` as separate arguments ("$@"), never re-parsed by the shell.
script="mastfetch plan \"\$@\" --format jsonl > $PLAN.tmp && mv $PLAN.tmp $PLAN"
overrides="{\"command\": [\"sh\", \"-c\", $(json_str "$script"), \"mastfetch-plan\""
for item in "$@"; do
  overrides+=", $(json_str "$item")"
done
overrides+="]}"
# One attempt: a plan that fails (exit 1: some items could not be planned; exit 2: a bad
# selection) fails the same way again; its log says why, and the shards do not start.
plan_job=$(aws batch submit-job \
  --job-name mastfetch-plan \
  --job-queue "$JOB_QUEUE" \
  --job-definition "$definition" \
  --container-overrides "$overrides" \
  --retry-strategy attempts=1 \
  --query jobId --output text)
echo "plan job: $plan_job"

# The shards: N children, started once the plan job has succeeded. Ref::shards in the job
# definition's command becomes --shards $SHARDS, so the array size and N cannot disagree.
array_job=$(aws batch submit-job \
  --job-name mastfetch-get \
  --job-queue "$JOB_QUEUE" \
  --job-definition "$definition" \
  --array-properties "size=$SHARDS" \
  --parameters "shards=$SHARDS" \
  --depends-on "jobId=$plan_job" \
  --query jobId --output text)
echo "array job: $array_job ($SHARDS shards)"
echo
echo "Follow it:    aws batch describe-jobs --jobs $array_job --query 'jobs[0].arrayProperties.statusSummary'"
echo "One shard:    aws batch describe-jobs --jobs $array_job:0"
echo "Rerun shard 3 alone if it failed (it resumes, and skips what is complete):"
echo "  aws batch submit-job --job-name mastfetch-get-3 --job-queue $JOB_QUEUE \\"
echo "    --job-definition $definition --container-overrides '{\"command\": [\"mastfetch\", \"get\","
echo "    \"@$PLAN\", \"--shards\", \"$SHARDS\", \"--shard-index\", \"3\", \"--dest\", \"/mnt/shared/mirror\","
echo "    \"--json\", \"--no-progress\"]}'"
