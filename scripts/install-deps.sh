#!/usr/bin/env bash
# Installs every build and test dependency from Debian packages and the npm registry.
# Idempotent; run as root on Debian 12. Nothing is downloaded at build time.
# --build-only: what building the binary needs, nothing the tests use (the container image's build stage).
set -euo pipefail
cd "$(dirname "$0")/.."

debian_packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libboost1.81-dev libprotobuf-dev protobuf-compiler nlohmann-json3-dev
  catch2 libucx-dev libpcre2-dev libopenblas-dev prometheus-cpp-dev
  libcli11-dev libicu-dev
)
build_only=false
[ "${1:-}" = "--build-only" ] && build_only=true
if ! $build_only; then
  debian_packages+=(clang-format clang-tidy ucx-utils curl python3-numpy python3-yaml python3-jsonschema prometheus)
fi
# prometheus: the real server and promtool the metrics test scrapes with (it runs its own instance on a free
# port; where systemd runs, the package also enables its own service on :9090).

# Node.js may come from another source already; only add Debian's when absent.
if ! $build_only; then
  command -v node >/dev/null || debian_packages+=(nodejs)
  command -v npm >/dev/null || debian_packages+=(npm)
fi

missing=()
for package in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

$build_only && exit 0

# Test-only JavaScript clients and validators (tokenizer reference, API clients, Kubernetes schemas).
if [ -f tests/js/package.json ]; then
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
fi

# Debian's kubectl renders the kustomize manifests in the tests. It is unpacked under build/tools rather than
# installed: a kubectl from another source may already own /usr/bin/kubectl, and the tests must not use that one.
kubectl_root=build/tools/kubernetes-client
if [ ! -x "$kubectl_root/usr/bin/kubectl" ]; then
  download=$(mktemp -d)
  chmod 755 "$download"  # apt fetches as the _apt user
  (cd "$download" && { apt-get download -qq kubernetes-client 2>/dev/null ||
    { apt-get update -qq && apt-get download -qq kubernetes-client; }; })
  mkdir -p "$kubectl_root"
  dpkg -x "$download"/kubernetes-client_*.deb "$kubectl_root"
  rm -rf "$download"
fi
