#!/usr/bin/env bash
# Installs every build and test dependency from Debian packages and the npm registry.
# Idempotent; run as root on Debian 12. Nothing is downloaded at build time.
set -euo pipefail
cd "$(dirname "$0")/.."

debian_packages=(
  build-essential cmake ninja-build ccache pkg-config git
  clang-format clang-tidy
  libboost1.81-dev libprotobuf-dev protobuf-compiler nlohmann-json3-dev
  catch2 libucx-dev ucx-utils libpcre2-dev libopenblas-dev prometheus-cpp-dev
  libcli11-dev libicu-dev curl
  python3-numpy
  prometheus
)
# prometheus: the real server and promtool the metrics test scrapes with (it runs its own instance on a free
# port; where systemd runs, the package also enables its own service on :9090).

# Node.js may come from another source already; only add Debian's when absent.
command -v node >/dev/null || debian_packages+=(nodejs)
command -v npm >/dev/null || debian_packages+=(npm)

missing=()
for package in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Test-only JavaScript clients and validators (tokenizer reference, API clients).
if [ -f tests/js/package.json ]; then
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
fi
