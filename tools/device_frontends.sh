#!/bin/bash
# One device call (H100/H200, 16 cores): `serve --frontends N` (default N = 12: with the 4 load-generator
# processes and the engine process on the same 16 cores, 8 left the frontends ~85 % busy and the overload
# tail at 2.9-4x; 12 gave 1.6x, 16 1.5x but less unloaded throughput; docs/server.md, round seven) on the synthetic BGE-M3
# (fast backend, bf16, real XLM-R tokenizer), --max-concurrent-requests 64, clients in 4 processes,
# $DURATION s per run (default 15), in this order:
#   queries-c64                  queries, 64 clients: the unloaded p99 the overload target is 2x of
#   overload-c640                queries, 640 clients, a refused client retries at once (worst case)
#   overload-c640-retry-after    the same, clients wait the 429's Retry-After (as the OpenAI SDK does)
#   recovery-c64                 queries, 64 clients, right after the overload: it recovers at once
#   passages-c32                 passages (8 per request), 32 clients
# $OUT gets f<N>-<run>.json (bench serve), f<N>-metrics.txt (/metrics after the runs), run.log (one line
# per run: throughput, admitted p50/p99, 429 p50/p99, server CPU per request; then, per server process
# and per load-generator process, event-loop lag p99/max, stalls (gc or other) and GC pauses during
# the run (tools/loop_summary.py); exit codes).
# A/B in one call: VARIANTS lists SERVE_ARGS variants separated by ';' (e.g. "--no-gc-freeze;--gc-freeze"),
# REPEAT rounds of them (default 1), one server start per variant and round, in the order given in odd
# rounds and reversed in even ones (A B B A: drift on the host weighs on both); the files are then
# f<N>-v<i>-r<round>-<run>.json and f<N>-v<i>-r<round>-metrics.txt. A server that is not ready in
# 90 s is skipped (its log's tail in run.log); no new server starts after DEADLINE_S (default 420) s.
# Needs .whl/
# (fastapi, uvicorn, uvloop, httptools, prometheus_client, ... for Python 3.12) and
# .carry-run/xlmr-tokenizer/ beside the tree. Expected about 3-4 minutes for FRONTENDS=12 (one server
# start, five 15 s runs); it must stay under 8. FRONTENDS="1 8" adds the single-process comparison.
# The overload A/B of --gc-freeze, about 5-6 minutes (4 server starts, two 15 s runs each):
#   FRONTENDS=8 ONLY="queries-c64|retry-after" VARIANTS="--no-gc-freeze;--gc-freeze" REPEAT=2 \
#   bash tools/device_frontends.sh
# A dry run on CPU (move .whl aside, or it installs the 3.12 wheels over the venv's):
#   OUT=/tmp/out PY=/work/main/.venv/bin/python MODEL=/tmp/tiny/bge-m3 DEVICE=cpu SERVE_ARGS="--backend fake" \
#   DURATION=2 FRONTENDS=2 bash tools/device_frontends.sh
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY="${PY:-python3}"
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=src:/tmp/site || exit 1
fi
FRONTENDS="${FRONTENDS:-12}" DEVICE="${DEVICE:-cuda}" DURATION="${DURATION:-15}" SERVE_ARGS="${SERVE_ARGS:-}"
VARIANTS="${VARIANTS-}" REPEAT="${REPEAT:-1}" DEADLINE_S="${DEADLINE_S:-420}"
BEGIN=$(date +%s)
PROCS="${PROCS:-4}"  # load-generator processes
ONLY="${ONLY:-.}"  # a regex of the run names to keep (e.g. "queries-c64|retry-after")
PORT=8090
URL=http://127.0.0.1:$PORT
{ date -u; nproc; nvidia-smi --query-gpu=name --format=csv,noheader; } > $OUT/run.log 2>&1
if [ -z "${MODEL:-}" ]; then
  MODEL=/tmp/m3
  $PY -c "
from pathlib import Path
from m3engine.bench.synthetic import build_synthetic
build_synthetic('bge-m3', Path('/tmp/m3'), tokenizer=Path('.carry-run/xlmr-tokenizer'))" >> $OUT/run.log 2>&1
fi

cpu_s() { $PY tools/proc_cpu.py "$1"; }  # "PROCESS CHILDREN MAIN_THREAD" CPU seconds
ready() { $PY -c "import urllib.request as u; u.urlopen('$URL/ready', timeout=2)" 2>/dev/null; }
RUNS=(
  "queries 64 queries-c64"
  "queries 640 overload-c640"
  "queries 640 overload-c640-retry-after --honour-retry-after"
  "queries 64 recovery-c64"
  "passages 32 passages-c32"
)

IFS=';' read -r -a VARIANT_LIST <<< "$VARIANTS"
[ ${#VARIANT_LIST[@]} -eq 0 ] && VARIANT_LIST=("")
ORDER=()  # "round variant" pairs: the variants in order in odd rounds, reversed in even ones
for r in $(seq 1 $REPEAT); do
  for i in "${!VARIANT_LIST[@]}"; do
    v=$i; [ $((r % 2)) -eq 0 ] && v=$(( ${#VARIANT_LIST[@]} - 1 - i ))
    ORDER+=("$r $v")
  done
done

serve_and_run() {  # N TAG EXTRA_ARGS...: one server start and every kept run against it
  local N=$1 TAG=$2; shift 2
  local START=$(date +%s)
  $PY -m m3engine serve --model $MODEL --device $DEVICE --port $PORT --max-concurrent-requests 64 \
    --frontends $N --log-level warning $SERVE_ARGS "$@" > /tmp/serve-$TAG.log 2>&1 &
  SRV=$!
  for i in $(seq 1 90); do ready && break; kill -0 $SRV 2>/dev/null || break; sleep 1; done
  if ! ready; then
    echo "$TAG (args: $SERVE_ARGS $*): NOT READY after $(( $(date +%s) - START ))s; skipped" >> $OUT/run.log
    grep -v "Loading weights" /tmp/serve-$TAG.log | tail -5 >> $OUT/run.log
    kill -TERM $SRV 2>/dev/null; wait $SRV 2>/dev/null
    return
  fi
  sleep 2  # the last frontends finish starting (one answering /ready is enough for the loop above)
  echo "$TAG (args: $SERVE_ARGS $*) ready after $(( $(date +%s) - START ))s; runtime $($PY -c "
import json, urllib.request as u; print(json.load(u.urlopen('$URL/info'))['runtime'])" 2>&1)" >> $OUT/run.log
  for spec in "${RUNS[@]}"; do
    set -- $spec
    [[ $3 =~ $ONLY ]] || continue
    read E0 C0 _ <<< "$(cpu_s $SRV)"
    timeout 90 $PY -m m3engine bench serve --url $URL --workload $1 --concurrency $2 --duration $DURATION \
      --processes $PROCS ${4:-} --output $OUT/$TAG-$3.json --plot $OUT/$TAG-$3.png > /dev/null 2>> $OUT/run.log
    read E1 C1 _ <<< "$(cpu_s $SRV)"
    $PY -c "
import json
r = json.load(open('$OUT/$TAG-$3.json'))
n, main, children = max(1, r['requests']), $E1 - $E0, $C1 - $C0
lat, refused = r['latency_ms'], r['error_latency_ms'].get('429', {})
print(f\"$TAG $3: {r['throughput_rps']} ok/s, admitted p50 {lat['p50']} p99 {lat['p99']} ms, \"
      f\"errors {r['errors_by_status']}, 429 p50 {refused.get('p50')} p99 {refused.get('p99')} ms; \"
      f\"server CPU per request {1000 * (main + children) / n:.3f} ms (main process {1000 * main / n:.3f}, \"
      f\"frontends {1000 * children / n:.3f})\")
d = r['diagnostics']
worst = max(d['latency_ms_by_frontend'].items(), key=lambda kv: kv[1].get('p99', 0), default=(None, {}))
print(f\"  inside the app p50/p99 {d['server_time_ms']}; slowest frontend {worst[0]} {worst[1]}\")
" >> $OUT/run.log 2>&1
    $PY tools/loop_summary.py $OUT/$TAG-$3.json >> $OUT/run.log 2>&1
  done
  $PY -c "import urllib.request as u; print(u.urlopen('$URL/metrics').read().decode())" > $OUT/$TAG-metrics.txt 2>&1
  kill -TERM $SRV
  timeout 60 tail --pid=$SRV -f /dev/null; wait $SRV; echo "$TAG exit rc=$?" >> $OUT/run.log
  grep -v "Loading weights" /tmp/serve-$TAG.log | tail -3 >> $OUT/run.log
}

for N in $FRONTENDS; do
  for pair in "${ORDER[@]}"; do
    read r v <<< "$pair"
    if [ $(( $(date +%s) - BEGIN )) -gt $DEADLINE_S ]; then
      echo "f$N variant $v round $r: not started, past DEADLINE_S=$DEADLINE_S" >> $OUT/run.log
      continue
    fi
    TAG=f$N
    [ ${#VARIANT_LIST[@]} -gt 1 ] || [ $REPEAT -gt 1 ] && TAG=f$N-v$v-r$r
    # Word splitting of the variant's flags is wanted here: "--a 1 --b" is three arguments.
    serve_and_run $N $TAG ${VARIANT_LIST[$v]}
  done
done
if [ ${#VARIANT_LIST[@]} -gt 1 ] || [ $REPEAT -gt 1 ]; then
  echo "== A/B (tools/ab_summary.py)" >> $OUT/run.log; $PY tools/ab_summary.py $OUT >> $OUT/run.log 2>&1
fi
cat $OUT/run.log
