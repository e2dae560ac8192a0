#!/bin/bash
# Server CPU per request, engine (parent) process vs frontends: `serve --frontends N` with the fake
# backend (zero delay) on the tiny BGE-M3 at $MODEL, `bench serve` (its lean HTTP client, one process).
#   tools/cpu_measure.sh [FRONTENDS] [CONCURRENCY] [DURATION_S]
set -eu
N=${1:-2}; C=${2:-32}; D=${3:-15}; PORT=${PORT:-8099}
PY="env HF_HUB_OFFLINE=1 PYTHONPATH=src /work/main/.venv/bin/python"
MODEL=${MODEL:-/tmp/fakem3}
cpu_s() { $PY tools/proc_cpu.py "$1"; }  # "PROCESS CHILDREN MAIN_THREAD" CPU seconds
$PY -m m3engine serve --model $MODEL --backend fake --device cpu --port $PORT --frontends $N \
  --log-level warning > /tmp/cpu-measure-$N.log 2>&1 &
SRV=$!
for i in $(seq 1 90); do curl -sf http://127.0.0.1:$PORT/ready > /dev/null && break; sleep 1; done
LOAD="$PY -m m3engine bench serve --url http://127.0.0.1:$PORT --workload queries --concurrency $C --processes 1"
$LOAD --duration 3 > /dev/null  # warm
read E0 C0 M0 <<< "$(cpu_s $SRV)"
$LOAD --duration $D --output /tmp/cpu-measure-$N.json > /dev/null
read E1 C1 M1 <<< "$(cpu_s $SRV)"
kill -TERM $SRV; wait $SRV || true
$PY -c "
import json
r = json.load(open('/tmp/cpu-measure-$N.json')); n = r['requests']
e, c, m = $E1 - $E0, $C1 - $C0, $M1 - $M0
print(f\"frontends=$N c$C: {r['throughput_rps']} req/s p50 {r['latency_ms']['p50']} p99 {r['latency_ms']['p99']} ms errors {r['errors_by_status']}; \"
      f\"CPU/req engine {1000*e/n:.3f} ms (event loop {1000*m/n:.3f}), frontends {1000*c/n:.3f} ms\")
"
