#!/usr/bin/env bash
# Installs what Lineage needs on Debian 12 (idempotent), and makes OpenBLAS the selected BLAS:
# with Debian's reference BLAS a libtorch training step is about 10x slower.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "setup: run as root or install sudo" >&2; exit 1; }
  SUDO="sudo"
fi

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas0-pthread libopenblas-dev
  libgloo-dev   # the Gloo headers that libtorch's c10d ProcessGroupGloo needs (data-parallel training)
  nlohmann-json3-dev libcli11-dev libfmt-dev
  libcpp-httplib-dev libsqlite3-dev libsodium-dev
  zlib1g-dev    # gzip/deflate request bodies (lineage serve)
  libsimdjson-dev  # request logs read by lineage monitor (JSONL, gigabytes a week)
  libsentencepiece-dev libpcre2-dev
  libicu-dev    # Unicode normalization (NFC, NFKC, ...) of tokenizer.json normalizers
  clang-14 libclang-rt-14-dev  # libFuzzer + sanitizers for the fuzz targets (scripts/fuzz.sh; tests only)
  unicode-data  # NormalizationTest.txt: the Unicode conformance test the normalizer tests run
  libgtest-dev libgmock-dev libbenchmark-dev libpng-dev
  bible-kjv   # the King James Bible text: the embedded teacher's training data and the demo's
  chromium    # headless, to check that lineage report's HTML renders (tests)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: all Debian packages present"
fi

# Select OpenBLAS (pthread) for both BLAS and LAPACK alternatives.
arch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
for lib in libblas.so.3 liblapack.so.3; do
  target="/usr/lib/${arch}/openblas-pthread/${lib}"
  if [ -e "$target" ]; then
    $SUDO update-alternatives --set "${lib}-${arch}" "$target" >/dev/null
  fi
done
echo "setup: BLAS -> $(readlink -f /usr/lib/${arch}/libblas.so.3)"
