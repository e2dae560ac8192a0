#!/bin/bash
# One device call (H100/H200) for the engine: GPU tests, the engine bench for BGE-M3 (reduced latency
# ladder) and the reranker, and the batch-1 breakdown. Expects .whl/ (fastapi, uvicorn, ... for
# Python 3.12: the CLI imports them) and .carry-run/xlmr-tokenizer/ beside the tree. Results in $OUT.
# The server under load: tools/device_frontends.sh.
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=src:/tmp/site || exit 1
TOK=.carry-run/xlmr-tokenizer
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/run.log
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)" | tee -a $OUT/run.log

timeout 150 python3 -m pytest -m gpu tests/gpu -q -p no:cacheprovider > $OUT/gpu.log 2>&1; echo "gpu tests rc=$?" >> $OUT/run.log
tail -3 $OUT/gpu.log >> $OUT/run.log

timeout 240 python3 -m m3engine bench --synthetic bge-m3 --tokenizer $TOK --dtype bf16 \
  --latency-lengths 128,512,8192 --batch-sizes 32 --out $OUT/bench >> $OUT/run.log 2>&1
echo "bench rc=$?" >> $OUT/run.log
timeout 120 python3 -m m3engine bench --synthetic bge-reranker-v2-m3 --tokenizer $TOK --dtype fp16 \
  --out $OUT/bench >> $OUT/run.log 2>&1
echo "rerank bench rc=$?" >> $OUT/run.log
timeout 60 python3 tools/batch1_probe.py $TOK >> $OUT/run.log 2>&1
timeout 100 python3 tools/pipeline_probe.py --tokenizer $TOK --backend fast --device cuda --dtype bf16 \
  --only embed --scratch /tmp/m3probe --json $OUT/pipeline.json > $OUT/pipeline.log 2>&1
echo "pipeline probe rc=$?" >> $OUT/run.log; tail -12 $OUT/pipeline.log >> $OUT/run.log
timeout 60 python3 tools/pipeline_probe.py --tokenizer $TOK --backend fast --device cuda --dtype fp16 \
  --only rerank --repeats 5 --scratch /tmp/m3probe > $OUT/pipeline-rerank.log 2>&1
echo "rerank pipeline probe rc=$?" >> $OUT/run.log; tail -1 $OUT/pipeline-rerank.log >> $OUT/run.log
for w in rerank long; do
  timeout 90 python3 tools/pipeline_timeline.py $TOK /tmp/m3probe $w > $OUT/timeline-$w.log 2>&1
  grep -E "bare launches|calls" $OUT/timeline-$w.log >> $OUT/run.log
done
grep -vE "Loading weights|^\s*$" $OUT/run.log | tail -40
