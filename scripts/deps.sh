#!/usr/bin/env bash
# Installs the Debian packages berth builds and tests with (idempotent; needs root).
set -euo pipefail
pkgs=(
  build-essential pkg-config libseccomp-dev      # build
  busybox-static                                 # test and demo root filesystems
  runc crun podman containerd                    # peers and real clients in tests
  docker-registry skopeo umoci                   # the reference registry and image tools
  debootstrap                                    # a realistic Debian image for benchmarks
  procps iproute2 util-linux psmisc              # ps, ip, unshare, script
  nftables iperf3 lxcfs fuse3                    # container networking, its benchmark, /proc views
  qemu-system-x86 linux-image-cloud-amd64 cpio   # a cgroup v2-only host in a VM
  protobuf-compiler libprotobuf-dev              # etcd-client's gRPC code (protoc, and the well-known .proto files it imports)
  etcd-server etcd-client                        # the API server's etcd backend in tests
  python3-venv                                   # the Python kubernetes client test
  hyperfine ca-certificates curl
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  if [ -f "$HOME/.cargo/env" ]; then
    . "$HOME/.cargo/env"
  else
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
    . "$HOME/.cargo/env"
  fi
fi
command -v cargo-nextest >/dev/null 2>&1 || cargo install cargo-nextest --locked
