#!/bin/sh
# setup_peers.sh: the Python environment of make_golden.py on Debian 12: Debian's torch 1.13 and the peers from
# PyPI at versions that work with it. Usage: sh tests/golden/setup_peers.sh [VENV_DIR] (default .peer/venv).
set -eu
VENV=${1:-"$(cd "$(dirname "$0")/../.." && pwd)/.peer/venv"}
# Debian packages: torch 1.13.1 (+ numpy), torchvision 0.14.1 (needed only because timm 0.6.13 imports it), venv.
dpkg -s python3-torch python3-torchvision python3-venv >/dev/null 2>&1 || \
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-torch python3-torchvision python3-venv
/usr/bin/python3 -m venv --system-site-packages "$VENV"
# --no-deps: torchscale/timm would otherwise pull torch/torchvision 2.x (+ CUDA) from PyPI.
"$VENV/bin/pip" install --no-deps torchscale==0.3.0 fairscale==0.4.0 timm==0.6.13 \
  flamingo-pytorch==0.1.2 einops==0.8.2 einops-exts==0.0.4
# transformers 4.49.0 is the newest that works with torch 1.13 (4.50+ imports torch.distributed.tensor).
# Its deps (tokenizers, huggingface_hub, safetensors, regex, ...) resolve normally; torch is not a hard dep.
"$VENV/bin/pip" install transformers==4.49.0 safetensors
