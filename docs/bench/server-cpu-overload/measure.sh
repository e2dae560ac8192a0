#!/bin/bash
# Server CPU per refused (429) and per admitted request, before and after the fast refusal path, on
# the 2-core VM: `tools/cpu_measure.sh N 32 15 MODE` (fake backend, real XLM-R tokenizer, one client
# process retrying at once) for N = 1 (one process) and 2 (--frontends 2), MODE = queries (every
# request admitted) and refused (one request holds the whole budget: every request is a 429), twice,
# for three servers:
#   before    the tree before the change (BASE, default 6d02b71), h11 and asyncio's loop
#   gateonly  this tree with uvloop and httptools hidden (the gate alone)
#   after     this tree (gate + httptools + uvloop)
# Run from the worktree root; writes matrix.txt here.
set -eu
BASE=${BASE:-6d02b71}
rm -rf /tmp/before /tmp/nofast && mkdir -p /tmp/before /tmp/nofast
git archive $BASE src | tar -x -C /tmp/before
for m in uvloop httptools; do echo 'raise ImportError("hidden for a measurement")' > /tmp/nofast/$m.py; done
VENV=/work/main/.venv/bin/python
for rep in 1 2; do
  for cfg in before gateonly after; do
    case $cfg in
      before) P="env HF_HUB_OFFLINE=1 PYTHONPATH=/tmp/nofast:/tmp/before/src $VENV";;
      gateonly) P="env HF_HUB_OFFLINE=1 PYTHONPATH=/tmp/nofast:src $VENV";;
      after) P="env HF_HUB_OFFLINE=1 PYTHONPATH=src $VENV";;
    esac
    for N in 1 2; do for M in queries refused; do
      echo -n "$cfg rep$rep: "; PY="$P" bash tools/cpu_measure.sh $N 32 15 $M
    done; done
  done
done > docs/bench/server-cpu-overload/matrix.txt 2>&1
