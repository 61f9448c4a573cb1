#!/usr/bin/env bash
# Make the full Fashion-MNIST available offline for `--dataset=fashion_mnist` (research/data/idx.py) and the
# real-file test in tests/test_data_idx.py: installs Debian's `dataset-fashion-mnist` package, which puts the
# four official IDX files (gzipped, 30 MB) in /usr/share/datasets/fashion-mnist/. A no-op when they are there.
# Needs root (CI runs as root) or sudo; where there is no apt-get it says so and the real-file test is skipped.
set -euo pipefail

DIR=/usr/share/datasets/fashion-mnist
FILES="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"

have_files() {
  local f
  for f in $FILES; do
    [ -f "$DIR/$f.gz" ] || [ -f "$DIR/$f" ] || return 1
  done
}

if have_files; then
  echo "fashion_mnist.sh: Fashion-MNIST already in $DIR"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "fashion_mnist.sh: no apt-get here; put the four Fashion-MNIST IDX files in \$RESEARCH_DATA_DIR/fashion_mnist/" \
    "for --dataset=fashion_mnist (the real-file test will be skipped)" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
if ! have_files; then
  echo "fashion_mnist.sh: dataset-fashion-mnist installed but $DIR lacks the IDX files" >&2
  exit 1
fi
echo "fashion_mnist.sh: installed Fashion-MNIST in $DIR"
