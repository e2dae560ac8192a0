#!/bin/bash
# Run from the worktree root on the 2-core VM: `serve --frontends 1` against `--frontends 2`, fake
# backend (no model compute: what is left is the server's own CPU), real XLM-R tokenizer, queries at
# 16 and 32 clients, 15 s each; the load generator (one client process) shares the two cores.
# Writes f<N>-queries-c<C>.json and results.txt here (results-1.txt: an earlier run of the same script).
set -eu
OUT=docs/bench/server-cpu-frontends
PY="env HF_HUB_OFFLINE=1 PYTHONPATH=src /work/main/.venv/bin/python"
MODEL=/tmp/fakem3  # tests.checkpoints' tiny BGE-M3 with the XLM-R tokenizer of ../shared/fixtures copied in
cpu_s() { $PY tools/proc_cpu.py "$1"; }  # "PROCESS CHILDREN MAIN_THREAD" CPU seconds
uptime > $OUT/results.txt
for N in 1 2; do
  $PY -m m3engine serve --model $MODEL --backend fake --device cpu --port 8099 --frontends $N \
    --log-level warning > /tmp/measure-fe-$N.log 2>&1 &
  SRV=$!
  for i in $(seq 1 90); do curl -sf http://127.0.0.1:8099/ready > /dev/null && break; sleep 1; done
  sleep 3
  for C in 16 32; do
    read E0 C0 _ <<< "$(cpu_s $SRV)"
    $PY -m m3engine bench serve --url http://127.0.0.1:8099 --workload queries --concurrency $C \
      --duration 15 --output $OUT/f$N-queries-c$C.json > /dev/null
    read E1 C1 _ <<< "$(cpu_s $SRV)"
    $PY -c "
import json
r = json.load(open('$OUT/f$N-queries-c$C.json'))
n, engine, children = r['requests'], $E1 - $E0, $C1 - $C0
print(f\"frontends=$N c$C: {r['throughput_rps']} req/s, p50 {r['latency_ms']['p50']} ms, p99 {r['latency_ms']['p99']} ms, \"
      f\"errors {r['errors_by_status']}; server CPU per request: {1000 * (engine + children) / n:.2f} ms \"
      f\"(main process {1000 * engine / n:.2f}, frontends {1000 * children / n:.2f})\")
" >> $OUT/results.txt
  done
  kill -TERM $SRV; wait $SRV || true
done
uptime >> $OUT/results.txt
cat $OUT/results.txt
