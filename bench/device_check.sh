#!/usr/bin/env bash
# One-command device check (docs/device-check.md): CUDA-only tests, decoder training throughput,
# extraction, GAN step and streaming rates as one Markdown table, against the throughput
# bench/estimate_paper_cost.py assumes. The full check fits one 8-minute call on a GPU;
# --quick runs it with tiny sizes (under a minute on a CPU). Arguments go to bench/device_check.py.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" "$root/bench/device_check.py" "$@"
