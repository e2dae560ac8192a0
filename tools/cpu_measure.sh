#!/bin/bash
# Server CPU per request, engine (parent) process vs frontends: `serve --frontends N` with the fake
# backend on the tiny BGE-M3 at $MODEL, `bench serve` (its lean HTTP client, one process).
#   tools/cpu_measure.sh [FRONTENDS] [CONCURRENCY] [DURATION_S] [MODE]
# MODE=queries (default): zero-delay forward passes, every request admitted: CPU per admitted query.
# MODE=refused: one request holds the whole budget (--max-concurrent-requests 1, a forward pass of
#   HOLD_S seconds), so every request of the run is refused: CPU per 429 (clients retry at once).
# FRONTENDS=1 is the single-process server. MODEL: tests.checkpoints' tiny BGE-M3 with the real XLM-R
# tokenizer (../shared/fixtures/xlmr-tokenizer/tokenizer.json copied in).
set -eu
N=${1:-2}; C=${2:-32}; D=${3:-15}; MODE=${4:-queries}; PORT=${PORT:-8099}
PY=${PY:-"env HF_HUB_OFFLINE=1 PYTHONPATH=src /work/main/.venv/bin/python"}
MODEL=${MODEL:-/tmp/fakem3}
URL=http://127.0.0.1:$PORT
cpu_s() { $PY tools/proc_cpu.py "$1"; }  # "PROCESS CHILDREN MAIN_THREAD" CPU seconds
ARGS=(); HOLD_S=600  # longer than any run: the holder is hung up on at the end
if [ "$MODE" = refused ]; then
  ARGS=(--max-concurrent-requests 1 --no-warmup --shutdown-timeout 1)
  export M3ENGINE_FAKE_DELAY_S=$HOLD_S
fi
$PY -m m3engine serve --model $MODEL --backend fake --device cpu --port $PORT --frontends $N \
  --log-level warning "${ARGS[@]}" > /tmp/cpu-measure-$N.log 2>&1 &
SRV=$!
for i in $(seq 1 90); do curl -sf $URL/ready > /dev/null && break; sleep 1; done
sleep 2  # the last frontends finish starting
if [ "$MODE" = refused ]; then
  curl -s -o /dev/null -H 'Content-Type: application/json' -d '{"inputs": "holds the budget"}' $URL/embed &
  HOLDER=$!
  sleep 1
fi
LOAD="$PY -m m3engine bench serve --url $URL --workload queries --concurrency $C --processes 1"
$LOAD --duration 3 > /dev/null  # warm
read E0 C0 M0 <<< "$(cpu_s $SRV)"
$LOAD --duration $D --output /tmp/cpu-measure-$N.json > /dev/null
read E1 C1 M1 <<< "$(cpu_s $SRV)"
if [ "$MODE" = refused ]; then kill $HOLDER; wait $HOLDER || true; fi  # its job is cancelled
kill -TERM $SRV; wait $SRV || true
$PY -c "
import json
r = json.load(open('/tmp/cpu-measure-$N.json')); n = r['requests']
e, c, m = $E1 - $E0, $C1 - $C0, $M1 - $M0
print(f\"frontends=$N c$C $MODE: {r['throughput_rps']} ok/s p50 {r['latency_ms']['p50']} p99 {r['latency_ms']['p99']} ms \"
      f\"by status {r['errors_by_status']} ({n / r['duration_s']:.0f} req/s), error latency {r['error_latency_ms']}; \"
      f\"CPU/req {1000*(e+c)/n:.3f} ms: engine {1000*e/n:.3f} ms (event loop {1000*m/n:.3f}), frontends {1000*c/n:.3f} ms\")
"
