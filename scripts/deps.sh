#!/usr/bin/env bash
# Installs the Debian packages berth builds and tests with (idempotent; needs root).
set -euo pipefail
pkgs=(
  build-essential pkg-config libseccomp-dev      # build
  busybox-static                                 # test and demo root filesystems
  runc crun podman containerd                    # peers and real clients in tests
  uidmap slirp4netns passt                       # rootless containers: newuidmap/newgidmap, user-mode networking
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
# kubectl 1.32, the API server tests' client: Debian 12 packages only 1.20
# (kubernetes-client), too old for them. Fetched from the Kubernetes project's release
# server, checked against its published SHA-256. Only the tests use it: where it cannot
# be fetched (no internet), the tests that drive kubectl are reported as skipped.
kubectl_minor() { kubectl version --client -o json 2>/dev/null | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -1; }
minor=$(kubectl_minor || true)
if [ "${minor:-0}" -lt 32 ]; then
  v=v1.32.4
  url="https://dl.k8s.io/release/$v/bin/linux/amd64/kubectl"
  tmp=$(mktemp -d)
  if curl -fsSL --max-time 120 -o "$tmp/kubectl" "$url" &&
    curl -fsSL --max-time 30 -o "$tmp/kubectl.sha256" "$url.sha256" &&
    echo "$(cat "$tmp/kubectl.sha256")  $tmp/kubectl" | sha256sum --check --quiet; then
    install -m 0755 "$tmp/kubectl" /usr/local/bin/kubectl
    echo "deps: installed kubectl $v in /usr/local/bin"
  else
    echo "deps: WARNING: kubectl 1.32 could not be fetched from $url;" \
      "the tests that drive kubectl will be skipped (install kubectl 1.32 on PATH to run them)" >&2
  fi
  rm -rf "$tmp"
fi
