#!/usr/bin/env bash
# The GPU suite on a borrowed NVIDIA GPU: `benchmarks/gpu.sh [--repeats N]` from anywhere in the repository.
# Installs nothing. Checks that there is a GPU, that JAX sees it and whether PyTorch does, then runs
# `python -m benchmarks.run --suite=gpu` (about 8 minutes at most; see benchmarks/README.md, "GPU") and keeps
# its output in ${GPU_SUITE_OUT:-/tmp/gpu_suite_<host>_<time>.md}.
# Setup, once: pip install -e ".[cuda12,bench]"   (bench: PyTorch, for the DCGAN and LSTM twins; optional)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu.sh: nvidia-smi not found: no NVIDIA driver on this machine" >&2
  exit 1
fi
nvidia-smi --query-gpu=index,name,memory.total,memory.used,driver_version --format=csv || {
  echo "gpu.sh: nvidia-smi failed: the driver sees no GPU" >&2
  exit 1
}

export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX takes memory as it needs it: PyTorch shares the GPU
python - <<'PY'
import sys

import jax

gpus = [d for d in jax.devices() if d.platform == "gpu"]
if not gpus:
    sys.exit(f"gpu.sh: JAX {jax.__version__} sees no GPU (devices: {jax.devices()}); install the CUDA wheels: "
             "pip install -e '.[cuda12,bench]'")
print(f"JAX {jax.__version__}: {len(gpus)} GPU(s), using {gpus[0].device_kind}")
try:
    import torch
except ImportError:
    print("PyTorch not installed: the DCGAN and LSTM rows will have no PyTorch baseline (pip install -e '.[bench]')")
else:
    cuda = torch.cuda.is_available()
    print(f"PyTorch {torch.__version__}: CUDA {'yes, ' + torch.cuda.get_device_name(0) if cuda else 'NO'}"
          + ("" if cuda else " (a CPU build: the PyTorch rows will be skipped)"))
PY

out="${GPU_SUITE_OUT:-/tmp/gpu_suite_$(hostname)_$(date +%Y%m%d_%H%M%S).md}"
start=$(date +%s)
python -m benchmarks.run --suite=gpu "$@" | tee "$out"
echo "gpu.sh: $(( $(date +%s) - start )) s; output kept in $out"
