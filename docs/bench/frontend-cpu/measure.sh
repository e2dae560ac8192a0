#!/bin/bash
# Frontend CPU per admitted query, before and after the inline tokenize/respond change, on the 2-core
# VM. `serve --frontends 2 --backend fake` on the tiny BGE-M3 widened to 1,024 (each answer is one
# 1,024-float vector, as with BGE-M3) with the real XLM-R tokenizer; `bench serve --workload queries`
# (one client process) for $D s at concurrency 16 and 1, three times, the two trees interleaved:
#   before  BASE (default a2c6df2, the fork point of branch frontend-cpu)
#   after   this tree
# Per run: throughput, latency p50/p99, CPU per request of the engine process and of the frontends
# (tools/proc_cpu.py), and the frontends' CPU split into their event-loop thread and all other
# threads (tokenizer pool, to_thread workers), from /proc/<pid>/task. Writes results.txt here.
# Run from the worktree root.
set -eu
BASE=${BASE:-a2c6df2}; D=${D:-15}; PORT=8099; URL=http://127.0.0.1:$PORT
PY=/work/main/.venv/bin/python
export HF_HUB_OFFLINE=1
MODEL=/tmp/fakem3-1024
if [ ! -d $MODEL ]; then
  [ -d /tmp/tiny/bge-m3 ] || PYTHONPATH=src $PY -m tests.checkpoints /tmp/tiny
  cp -r /tmp/tiny/bge-m3 $MODEL && cp ../shared/fixtures/xlmr-tokenizer/* $MODEL/
  sed -i 's/"hidden_size": 32/"hidden_size": 1024/' $MODEL/config.json  # the fake reads no weights
fi
rm -rf /tmp/frontend-cpu-before && mkdir -p /tmp/frontend-cpu-before
git archive $BASE src | tar -x -C /tmp/frontend-cpu-before

threads() {  # "MAIN OTHER" CPU seconds of the frontends' main threads and of their other threads
  $PY - "$@" <<'PY'
import os, sys
main = other = 0.0
for pid in sys.argv[1:]:
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        main, other = (main + seconds, other) if tid == pid else (main, other + seconds)
print(main, other)
PY
}

run() {  # run LABEL SRC CONCURRENCY
  PYTHONPATH=$2 $PY -m m3engine serve --model $MODEL --backend fake --device cpu --port $PORT \
    --frontends 2 --log-level warning > /tmp/frontend-cpu-serve.log 2>&1 &
  local srv=$!
  for i in $(seq 1 90); do curl -sf $URL/ready > /dev/null && break; sleep 1; done
  sleep 2  # the last frontend finishes starting
  local fr; fr=$(pgrep -P $srv -f pipe_handle | tr '\n' ' ')
  local load="env PYTHONPATH=src $PY -m m3engine bench serve --url $URL --workload queries --concurrency $3 --processes 1"
  $load --duration 3 > /dev/null  # warm
  read E0 C0 M0 <<< "$(PYTHONPATH=src $PY tools/proc_cpu.py $srv)"; read T0 O0 <<< "$(threads $fr)"
  $load --duration $D --output /tmp/frontend-cpu.json > /dev/null
  read E1 C1 M1 <<< "$(PYTHONPATH=src $PY tools/proc_cpu.py $srv)"; read T1 O1 <<< "$(threads $fr)"
  kill -TERM $srv; wait $srv || true
  $PY -c "
import json
r = json.load(open('/tmp/frontend-cpu.json')); n = r['requests']; ms = lambda s: f'{1000 * s / n:.3f}'
print(f\"$1 c$3: {r['throughput_rps']} ok/s p50 {r['latency_ms']['p50']} p99 {r['latency_ms']['p99']} ms \"
      f\"errors {r['errors_by_status']}; CPU/req engine {ms($E1 - $E0)} ms, frontends {ms($C1 - $C0)} ms \"
      f\"(event loop {ms($T1 - $T0)}, other threads {ms($O1 - $O0)})\")"
}

{ date -u; nproc
  for rep in 1 2 3; do for c in 16 1; do
    run before /tmp/frontend-cpu-before/src $c
    run after src $c
  done; done
} > docs/bench/frontend-cpu/results.txt 2>&1
