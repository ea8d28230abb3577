#!/usr/bin/env bash
# A client of the wasmjobs REST API in plain curl + jq: submit a job, follow its
# status and check-ins until it ends, then print its log.
#
#   examples/submit-and-watch.sh demo '{"image":"demo-1"}'
#   WASMJOBS_URL=https://jobs.example:9443 CORE_SECRET=... examples/submit-and-watch.sh flaky '{"succeed_on":2}'
#
# The secret comes from CORE_SECRET, else from data/secret (where `wasmjobs serve`
# writes a generated one).
set -euo pipefail

name=${1:?usage: $0 <job-name> [parameters-json]}
params=${2:-'{}'}
url=${WASMJOBS_URL:-http://127.0.0.1:9443}
secret=${CORE_SECRET:-$(cat "${WASMJOBS_DATA_DIR:-data}/secret")}
auth="Authorization: Harbor-Secret $secret"

body=$(jq -n --arg name "$name" --argjson params "$params" '{job: {name: $name, parameters: $params}}')
reply=$(curl -sS -X POST "$url/api/v1/jobs" -H "$auth" -H 'Content-Type: application/json' -d "$body")
id=$(jq -r '.job.id // empty' <<<"$reply")
if [ -z "$id" ]; then
  echo "refused: $(jq -r '"\(.code) \(.err): \(.description)"' <<<"$reply")" >&2
  exit 1
fi
echo "submitted $name as $id"

last=""
while :; do
  job=$(curl -sS "$url/api/v1/jobs/$id" -H "$auth")
  line=$(jq -r '.job | "\(.status)\t\(.check_in // "-")\tattempts=\(.attempts | length)"' <<<"$job")
  [ "$line" != "$last" ] && echo "$line" && last=$line
  case $(jq -r .job.status <<<"$job") in
    success | error | stopped | cancelled) break ;;
  esac
  sleep 0.2
done

echo "--- log"
curl -sS "$url/api/v1/jobs/$id/log" -H "$auth"
