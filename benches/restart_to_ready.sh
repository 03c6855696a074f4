#!/usr/bin/env bash
# process restart to ready: exec serve on the bench data (530K indexed), poll /readyz
cd "$(dirname "$0")/.."
start=$(date +%s%N)
target/release/crmsearch --data-dir target/bench-cdc --node bench --addr 127.0.0.1:7599 serve > target/bench-cdc/restart.log 2>&1 &
pid=$!
until curl -sf http://127.0.0.1:7599/readyz > /dev/null; do sleep 0.02; done
end=$(date +%s%N)
echo "restart to ready: $(( (end - start) / 1000000 )) ms"
curl -s http://127.0.0.1:7599/readyz; echo
kill -TERM $pid; wait $pid
