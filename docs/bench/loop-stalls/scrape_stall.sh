#!/bin/bash
# Loop stalls made by /metrics scrapes of an idle --frontends 8 server (docs/server.md "loop stalls").
cd "$(git rev-parse --show-toplevel)"
export HF_HUB_OFFLINE=1 PYTHONPATH=src; PY=${PY:-/work/main/.venv/bin/python}
$PY -m m3engine serve --model ${MODEL:-/tmp/fakem3} --backend fake --device cpu --port 8115 --frontends 8 --max-concurrent-requests 16 --log-level warning > /tmp/m8.log 2>&1 & SRV=$!
for i in $(seq 90); do curl -sf localhost:8115/ready >/dev/null && break; sleep 1; done; sleep 5
$PY - <<'P'
import time, urllib.request as u
from m3engine.bench.loop_stats import scrape, server_loops
url = "http://127.0.0.1:8115"
before = scrape(url)
t = []
for i in range(40):
    s = time.perf_counter(); u.urlopen(url + "/metrics").read(); t.append(time.perf_counter() - s); time.sleep(0.1)
after = scrape(url)
rep = server_loops(before, after)
print("scrape ms median", round(sorted(t)[20]*1000, 1), "max", round(max(t)*1000, 1))
fr = {k: v for k, v in rep.items() if k.startswith("frontend")}
print("stalls other (sum over frontends)", sum(v["stalls"]["other"] for v in fr.values()), "gc", sum(v["stalls"]["gc"] for v in fr.values()))
print("worst lag max_le", max(v["lag"]["max_le_ms"] or 0 for v in fr.values()))
P
kill -TERM $SRV; wait $SRV
