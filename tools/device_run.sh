#!/bin/bash
# One device call (H100/H200): GPU tests, the engine bench (reduced ladder), and the server over HTTP
# against the in-process engine. Expects .whl/ (fastapi, uvicorn, ... for Python 3.12) and
# .carry-run/xlmr-tokenizer/ beside the tree. Results land in $OUT.
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=src:/tmp/site || exit 1
TOK=.carry-run/xlmr-tokenizer
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/run.log
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)" | tee -a $OUT/run.log

timeout 170 python3 -m pytest -m gpu tests/gpu -q -p no:cacheprovider > $OUT/gpu.log 2>&1; echo "gpu tests rc=$?" >> $OUT/run.log

timeout 200 python3 -m m3engine bench --synthetic bge-m3 --tokenizer $TOK --dtype bf16 \
  --latency-lengths 128,512,8192 --batch-sizes 32 --out $OUT/bench >> $OUT/run.log 2>&1
echo "bench rc=$?" >> $OUT/run.log

python3 -c "
from pathlib import Path
from m3engine.bench.synthetic import build_synthetic
build_synthetic('bge-m3', Path('/tmp/m3'), tokenizer=Path('$TOK'))" >> $OUT/run.log 2>&1
python3 -m m3engine serve --model /tmp/m3 --device cuda --port 8090 --log-level warning > /tmp/serve.log 2>&1 &
SRV=$!
ready() { python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8090/ready', timeout=2)" 2>/dev/null; }
for i in $(seq 1 120); do ready && break; sleep 1; done
echo "server ready after ${i}s" >> $OUT/run.log
for spec in "passages 32 20" "queries 64 15"; do
  set -- $spec
  timeout 60 python3 -m m3engine bench serve --url http://127.0.0.1:8090 --workload $1 --concurrency $2 \
    --duration $3 --output $OUT/serve-$1-c$2.json > /dev/null 2>> $OUT/run.log
done
kill -TERM $SRV; wait $SRV; echo "server exit rc=$?" >> $OUT/run.log
timeout 60 python3 -m m3engine bench inprocess --model /tmp/m3 --device cuda --workload passages --duration 20 \
  > $OUT/inprocess-passages.json 2>> $OUT/run.log
tail -5 /tmp/serve.log >> $OUT/run.log
