#!/bin/bash
# Second device call: GPU tests, then the server on the synthetic BGE-M3 (fast backend, graphs warmed
# at start) under queries (c64), passages (c32), a 10x overload (c640 against 64 admitted requests)
# and the recovery after it; the in-process engine as the passages baseline. Results in $OUT.
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=src:/tmp/site || exit 1
TOK=.carry-run/xlmr-tokenizer
[ "${SKIP_GPU_TESTS:-0}" = 1 ] || { timeout 120 python3 -m pytest -m gpu tests/gpu -q -p no:cacheprovider > $OUT/gpu.log 2>&1; echo "gpu tests rc=$?" > $OUT/run.log; }
python3 -c "
from pathlib import Path
from m3engine.bench.synthetic import build_synthetic
build_synthetic('bge-m3', Path('/tmp/m3'), tokenizer=Path('$TOK'))" >> $OUT/run.log 2>&1
START=$(date +%s)
python3 -m m3engine serve --model /tmp/m3 --device cuda --port 8090 --max-concurrent-requests 64 \
  --log-level warning > /tmp/serve.log 2>&1 &
SRV=$!
ready() { python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8090/ready', timeout=2)" 2>/dev/null; }
for i in $(seq 1 150); do ready && break; sleep 1; done
echo "server ready after $(( $(date +%s) - START ))s" >> $OUT/run.log
run() {  # workload concurrency duration name
  timeout 60 python3 -m m3engine bench serve --url http://127.0.0.1:8090 --workload $1 --concurrency $2 \
    --duration $3 --processes 8 --output $OUT/$4.json > /dev/null 2>> $OUT/run.log
}
run queries 64 15 serve-queries-c64
run passages 32 15 serve-passages-c32
run queries 640 10 serve-overload-c640
run queries 64 8 serve-recovery-c64
kill -TERM $SRV; wait $SRV; echo "server exit rc=$?" >> $OUT/run.log
timeout 60 python3 -m m3engine bench inprocess --model /tmp/m3 --device cuda --workload passages --duration 15 \
  > $OUT/inprocess-passages.json 2>> $OUT/run.log
grep -v "Loading weights" /tmp/serve.log | tail -5 >> $OUT/run.log
