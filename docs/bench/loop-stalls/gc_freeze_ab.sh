#!/bin/bash
# The --gc-freeze A/B of docs/server.md "loop stalls" on the 2-core VM: REPS="1 2 3" VARIANTS="false true"
# EXTRA=--honour-retry-after MODEL=<tiny BGE-M3 with the XLM-R tokenizer.json> bash docs/bench/loop-stalls/gc_freeze_ab.sh
cd "$(git rev-parse --show-toplevel)"
export HF_HUB_OFFLINE=1 PYTHONPATH=src
PY=${PY:-/work/main/.venv/bin/python}
PORT=8112; URL=http://127.0.0.1:$PORT
C=${C:-160}; D=${D:-15}; MAXC=${MAXC:-16}
for rep in $REPS; do for freeze in $VARIANTS; do
  M3ENGINE_GC_FREEZE=$freeze $PY -m m3engine serve --model ${MODEL:-/tmp/fakem3} --backend fake --device cpu --port $PORT \
    --frontends 2 --max-concurrent-requests $MAXC --log-level warning > /tmp/ab-srv.log 2>&1 & SRV=$!
  for i in $(seq 60); do curl -sf $URL/ready >/dev/null && break; sleep 1; done; sleep 2
  $PY -m m3engine bench serve --url $URL --workload queries --concurrency 16 --duration 3 --processes 1 > /dev/null
  $PY -m m3engine bench serve --url $URL --workload queries --concurrency $C --duration $D --processes 1 $EXTRA --output /tmp/ab-$freeze-$rep.json > /dev/null
  kill -TERM $SRV; wait $SRV
  $PY -c "
import json; r=json.load(open('/tmp/ab-$freeze-$rep.json')); print('freeze=$freeze rep=$rep', r['throughput_rps'], 'ok/s', r['latency_ms'], r['errors_by_status'], r['error_latency_ms'], 'inside', r['diagnostics']['server_time_ms'])"
  $PY tools/loop_summary.py /tmp/ab-$freeze-$rep.json
done; done
