#!/bin/bash
# Server CPU per request, engine (parent) process vs frontends: `serve --frontends N` with the fake
# backend (zero delay) on the tiny BGE-M3 at $MODEL, tools/rawload.py as the client.
#   tools/cpu_measure.sh [FRONTENDS] [CONCURRENCY] [DURATION_S]
set -eu
N=${1:-2}; C=${2:-32}; D=${3:-15}; PORT=${PORT:-8099}
PY="env HF_HUB_OFFLINE=1 PYTHONPATH=src /work/main/.venv/bin/python"
MODEL=${MODEL:-/tmp/fakem3}
cpu_s() {  # "ENGINE CHILDREN MAIN": CPU seconds (user + system) of the server process, of its
           # children (the frontends), and of the server's main thread (its event loop) alone
  $PY - "$1" <<'PY'
import os, sys
root = sys.argv[1]
children = []
for task in os.listdir(f"/proc/{root}/task"):
    children += open(f"/proc/{root}/task/{task}/children").read().split()
def cpu(pid):
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except FileNotFoundError:
        return 0.0
print(cpu(root), sum(cpu(pid) for pid in children), cpu(f"{root}/task/{root}"))
PY
}
$PY -m m3engine serve --model $MODEL --backend fake --device cpu --port $PORT --frontends $N \
  --log-level warning > /tmp/cpu-measure-$N.log 2>&1 &
SRV=$!
for i in $(seq 1 90); do curl -sf http://127.0.0.1:$PORT/ready > /dev/null && break; sleep 1; done
$PY tools/rawload.py --url http://127.0.0.1:$PORT --concurrency $C --duration 3 > /dev/null  # warm
read E0 C0 M0 <<< "$(cpu_s $SRV)"
R=$($PY tools/rawload.py --url http://127.0.0.1:$PORT --concurrency $C --duration $D)
read E1 C1 M1 <<< "$(cpu_s $SRV)"
kill -TERM $SRV; wait $SRV || true
$PY -c "
import json
r = json.loads('$R'); n = r['requests']
e, c, m = $E1 - $E0, $C1 - $C0, $M1 - $M0
print(f\"frontends=$N c$C: {r['rps']} req/s p50 {r['p50_ms']} p99 {r['p99_ms']} ms errors {r['errors']}; \"
      f\"CPU/req engine {1000*e/n:.3f} ms (event loop {1000*m/n:.3f}), frontends {1000*c/n:.3f} ms\")
"
