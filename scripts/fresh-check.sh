#!/usr/bin/env bash
# Proves that the README's two commands work on a fresh Debian 12 machine:
#
#   scripts/setup.sh    then    scripts/test.sh
#
# run as root, from the repository, in a clean Debian 12 (bookworm) root made with
# debootstrap. Why: a missing install step in scripts/deps.sh once went unnoticed
# because the developer machine still had the package from an earlier manual install.
# A clean root has only what Debian installs (required + important priority, as on
# every Debian 12 system) plus what the scripts install themselves.
#
# What it does, as root:
#  1. debootstraps bookworm from the host's own Debian mirror (read from
#     /etc/apt/sources.list and /etc/apt/sources.list.d/*.{list,sources}) and caches
#     the result as a tarball in $FRESH_CACHE_DIR (default /var/cache/berth-fresh-check,
#     one per suite/variant/arch; FRESH_REFRESH=1 rebuilds it). Every run extracts an
#     untouched copy into a new /var/tmp/berth-fresh.XXXX, removed at the end unless
#     KEEP=1. The root's apt sources are the host's Debian sources (main, -updates,
#     -security, as the host has them).
#  2. copies the repository in, as /root/berth: git-tracked files plus uncommitted and
#     untracked-but-not-ignored files, never target/.
#  3. copies the host's Rust toolchain: ~/.rustup and ~/.cargo/bin (and ~/.cargo/env)
#     into the root's /root. The machines berth runs on have Rust preinstalled by
#     rustup, and rustup's download server is not reachable here, so the root gets the
#     same toolchain -- but NOT ~/.cargo/registry or any other cargo state: crates are
#     downloaded fresh from crates.io, as on a new machine. If the host keeps
#     cargo-nextest elsewhere on PATH (e.g. /usr/local/bin), that binary is copied into
#     /root/.cargo/bin, where those machines have it. PATH inside starts with
#     /root/.cargo/bin, as rustup's profile line makes it. (FRESH_RUST=none copies no
#     toolchain, to exercise the rustup install path where rustup is reachable.)
#  4. copies in this network's site settings, which every machine here has and which
#     are no part of berth's install steps: the local CA certificates in
#     /usr/local/share/ca-certificates (HTTPS goes through an intercepting proxy; they
#     are trusted once deps.sh installs ca-certificates), /etc/pip.conf, apt's
#     Acquire::Check-Valid-Until/Check-Date if the host turns them off (the mirror is
#     a dated snapshot), /etc/resolv.conf, and an /etc/hosts as the Debian installer
#     writes it.
#  5. enters the root (pivot_root, like chroot but with the root a real mount point)
#     inside new mount and PID namespaces (unshare), after mounting what the test
#     suite needs: proc, sysfs, the host's cgroup hierarchies
#     (rbind /sys/fs/cgroup), /dev (rbind, with devpts and a private /dev/shm), and a
#     tmpfs on /run. /tmp is the root's own (disk) directory, as on Debian 12;
#     FRESH_TMP=tmpfs mounts a tmpfs there instead. All mounts live only in the private
#     mount namespace and vanish with it; the PID namespace makes sure that nothing
#     started inside (daemons, leftover test processes) outlives a step.
#     The root shares the host's kernel and network namespace, as it must for the
#     tests: bridges, nftables rules and cgroups made by setup.sh and the tests are
#     made on the host, as when the two commands run on it. After each step the
#     bridges and the node network (VXLAN device, Service and NetworkPolicy tables,
#     cluster DNS address) the root's berth made are removed, as a reboot would.
#  6. runs scripts/setup.sh, then scripts/test.sh (arguments after -- go to test.sh),
#     each as a separate step, logging to $FRESH_LOG_DIR/<step>.log and the terminal.
#
# Usage:  scripts/fresh-check.sh [-- TEST.SH-ARGS...]
#
# Environment:
#   FRESH_STEPS=all     setup.sh, then test.sh (default)
#               setup   only setup.sh
#               deps    only scripts/deps.sh (installs the Debian packages, no build)
#               enter   debugging: enter the root and run quick checks of the
#                       environment (apt, toolchain, namespaces, cgroups, devices)
#               shell   debugging: an interactive shell in the root
#   KEEP=1              keep the work directory (the root) at the end
#   FRESH_CACHE_DIR     where the debootstrap tarballs live (/var/cache/berth-fresh-check)
#   FRESH_WORK_DIR      parent of the work directory (/var/tmp)
#   FRESH_LOG_DIR       where logs go (/var/tmp/berth-fresh-check-logs/<date-time>)
#   FRESH_REFRESH=1     debootstrap again instead of using the cached tarball
#   FRESH_MIRROR        the Debian mirror (default: the host's, see above)
#   FRESH_VARIANT       debootstrap variant: "default" (required + important, the
#                       default) or "minbase" (stricter: required only)
#   FRESH_MIN_FREE_GIB  free space needed in the work directory (15)
#   FRESH_TMP=tmpfs     tmpfs on /tmp instead of the root's own /tmp
#   FRESH_RUST=none     do not copy the host's Rust toolchain
set -euo pipefail

SUITE=${FRESH_SUITE:-bookworm}
VARIANT=${FRESH_VARIANT:-default}
STEPS=${FRESH_STEPS:-all}
CACHE_DIR=${FRESH_CACHE_DIR:-/var/cache/berth-fresh-check}
WORK_PARENT=${FRESH_WORK_DIR:-/var/tmp}
LOG_DIR=${FRESH_LOG_DIR:-/var/tmp/berth-fresh-check-logs/$(date +%Y%m%d-%H%M%S)}
MIN_FREE_GIB=${FRESH_MIN_FREE_GIB:-15}
RUSTUP_SRC=${RUSTUP_HOME:-$HOME/.rustup}
CARGO_SRC=${CARGO_HOME:-$HOME/.cargo}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case $SUITE in bookworm) LABEL="Debian 12" ;; *) LABEL="Debian $SUITE" ;; esac

say() { printf 'fresh-check: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
hms() { local s=$1; if [ "$s" -ge 3600 ]; then printf '%dh%02dm%02ds' $((s / 3600)) $((s % 3600 / 60)) $((s % 60)); else printf '%dm%02ds' $((s / 60)) $((s % 60)); fi; }

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

test_args=()
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --) shift; test_args=("$@"); break ;;
    *) die "unknown argument '$1' (arguments for scripts/test.sh go after --; see --help)" ;;
  esac
done
case $STEPS in all | setup | deps | enter | shell) ;; *) die "FRESH_STEPS=$STEPS: expected all, setup, deps, enter or shell" ;; esac
[ ${#test_args[@]} -eq 0 ] || [ "$STEPS" = all ] || die "arguments after -- are for scripts/test.sh, which FRESH_STEPS=$STEPS does not run"
case $VARIANT in default | minbase) ;; *) die "FRESH_VARIANT=$VARIANT: expected default or minbase" ;; esac

# ---- preconditions ---------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "must run as root (it debootstraps, mounts and chroots)"
for tool in git tar unshare pivot_root mountpoint flock ip; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed"
done
git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1 || die "$REPO is not a git checkout (the copy uses git ls-files)"
if ! command -v debootstrap >/dev/null; then
  say "debootstrap is missing; installing it with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap
  command -v debootstrap >/dev/null || die "could not install debootstrap"
fi
if [ "${FRESH_RUST:-copy}" = copy ]; then
  [ -x "$CARGO_SRC/bin/cargo" ] && [ -d "$RUSTUP_SRC/toolchains" ] ||
    die "no rustup toolchain at $CARGO_SRC/bin and $RUSTUP_SRC (this check copies the host's; FRESH_RUST=none to skip)"
fi
mkdir -p "$CACHE_DIR" "$WORK_PARENT" "$LOG_DIR"
free_kib=$(df -Pk "$WORK_PARENT" | awk 'NR == 2 { print $4 }')
[ "$free_kib" -ge $((MIN_FREE_GIB * 1024 * 1024)) ] ||
  die "only $((free_kib / 1024 / 1024)) GiB free in $WORK_PARENT; need $MIN_FREE_GIB GiB (FRESH_WORK_DIR= elsewhere, or FRESH_MIN_FREE_GIB=)"
ARCH=$(dpkg --print-architecture)

# ---- the host's Debian sources ----------------------------------------------------
# Prints "URI SUITE COMPONENT..." for each enabled deb source of the host whose suite
# is $SUITE, $SUITE-updates or $SUITE-security.
host_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
      awk '$1 == "deb" && NF >= 4 { line = $2 " " $3; for (i = 4; i <= NF; i++) line = line " " $i; print line }'
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '
      function flush(  n, m, i, j, u, s) {
        if ((" " types " ") ~ / deb / && tolower(enabled) != "no") {
          n = split(uris, u, " "); m = split(suites, s, " ")
          for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) print u[i], s[j], comps
        }
        types = uris = suites = comps = key = ""; enabled = "yes"
      }
      BEGIN { enabled = "yes" }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]/ { v = $0; gsub(/^[ \t]+|[ \t]+$/, "", v); set(key, v, 1); next }
      function set(k, v, more) {
        if (k == "types") types = more ? types " " v : v
        else if (k == "uris") uris = more ? uris " " v : v
        else if (k == "suites") suites = more ? suites " " v : v
        else if (k == "components") comps = more ? comps " " v : v
        else if (k == "enabled") enabled = v
      }
      /^[A-Za-z0-9-]+:/ {
        key = tolower(substr($0, 1, index($0, ":") - 1)); v = substr($0, index($0, ":") + 1)
        gsub(/^[ \t]+|[ \t]+$/, "", v); set(key, v, 0); next
      }
      END { flush() }' "$f"
  done
}
mapfile -t SOURCES < <(host_sources | awk -v s="$SUITE" '($2 == s || $2 == s "-updates" || $2 == s "-security" || $2 == s "/updates") && !seen[$1 " " $2]++')
MIRROR=${FRESH_MIRROR:-}
if [ -z "$MIRROR" ]; then
  for line in "${SOURCES[@]}"; do
    read -r uri suite _ <<<"$line"
    if [ "$suite" = "$SUITE" ]; then MIRROR=$uri; break; fi
  done
fi
[ -n "$MIRROR" ] || die "no '$SUITE' deb source in /etc/apt/sources.list{,.d}; set FRESH_MIRROR=http://..."
[ ${#SOURCES[@]} -gt 0 ] || SOURCES=("$MIRROR $SUITE main")

# ---- the cached debootstrap tarball ----------------------------------------------
if command -v zstd >/dev/null; then COMPRESS=--zstd EXT=tar.zst; else COMPRESS=--gzip EXT=tar.gz; fi
TARBALL=$CACHE_DIR/debian-$SUITE-$VARIANT-$ARCH.$EXT
build_tarball() {
  local build log=$LOG_DIR/debootstrap.log t0=$SECONDS variant_arg=()
  [ "$VARIANT" = default ] || variant_arg=(--variant="$VARIANT")
  rm -rf --one-file-system "$CACHE_DIR"/build.* # left by an interrupted run (we hold the lock)
  build=$(mktemp -d "$CACHE_DIR/build.XXXXXX")
  chmod 0755 "$build"
  say "debootstrap $SUITE (${VARIANT} variant) from $MIRROR into $build; log: $log"
  # In its own mount namespace, so that mounts a failed debootstrap leaves behind vanish.
  if ! unshare --mount --propagation private -- \
    debootstrap "${variant_arg[@]}" --arch="$ARCH" "$SUITE" "$build" "$MIRROR" 2>&1 | tee "$log" >&2; then
    cp "$build/debootstrap/debootstrap.log" "$LOG_DIR/debootstrap-target.log" 2>/dev/null || true
    rm -rf --one-file-system "$build"
    die "debootstrap failed; see $log (and $LOG_DIR/debootstrap-target.log if present)"
  fi
  rm -f "$build"/var/cache/apt/archives/*.deb
  tar -C "$build" --numeric-owner --xattrs --xattrs-include='*' $COMPRESS -cf "$TARBALL.tmp" .
  printf 'suite=%s variant=%s arch=%s mirror=%s built=%s\n' "$SUITE" "$VARIANT" "$ARCH" "$MIRROR" "$(date -u +%FT%TZ)" >"${TARBALL%%.tar*}.info"
  mv "$TARBALL.tmp" "$TARBALL"
  rm -rf --one-file-system "$build"
  say "cached $TARBALL ($(du -h "$TARBALL" | cut -f1)) in $(hms $((SECONDS - t0)))"
}
exec 9>"$CACHE_DIR/.lock"
flock 9 # one debootstrap at a time; concurrent runs wait for it
if [ "${FRESH_REFRESH:-0}" = 1 ] || [ ! -s "$TARBALL" ]; then build_tarball; fi
exec 9>&-

# ---- the work directory, and its removal ------------------------------------------
STEP_PID=
WORK=$(mktemp -d "$WORK_PARENT/berth-fresh.XXXX")
ROOT=$WORK/root
mounts_under() { awk -v w="$1" '$5 == w || index($5, w "/") == 1 { print $5 }' /proc/self/mountinfo; }
# The root shares this host's network namespace, so the bridges its berth made stay
# when its processes die with the step (a reboot would take them on a real machine).
# Left there, their routes make the next run's berth refuse the same subnets: remove
# those the root's network records name, if no interface is attached to them.
release_bridges() {
  local f b
  for f in "$ROOT"/var/lib/berth/networks/*.json; do
    [ -f "$f" ] || continue
    b=$(sed -n 's/^ *"bridge": *"\([^"]*\)".*/\1/p' "$f")
    [ -n "$b" ] && ip link show "$b" >/dev/null 2>&1 || continue
    if [ -z "$(ip -o link show master "$b" 2>/dev/null)" ]; then
      ip link delete "$b" 2>/dev/null && say "removed bridge $b (made in the root)"
    fi
  done
  return 0
}
# A berth server in the root also makes, in the network namespace it shares with this
# host, a node's VXLAN device, its Service and NetworkPolicy tables and the cluster
# DNS address on lo; they too outlive its processes. Those that were not here
# before this run are removed, unless a berth runs on this host (its own agent's, or
# another run's root's, would be taken from it). The engine's `berth` tables are
# left: a berth engine on this host shares them. The names are berth's constants
# (overlay::VXLAN_DEVICE, svcproxy::TABLE and netpol::TABLE in berth-net,
# services::CLUSTER_DNS_IP in berth-pods); a berth-agent test fails if one changes
# and this list does not.
node_net_objects() {
  local t
  ip link show berth.1 >/dev/null 2>&1 && echo "link berth.1"
  for t in "ip berth-proxy" "ip berth-netpol"; do
    # shellcheck disable=SC2086 # family and name are two words
    nft list table $t >/dev/null 2>&1 && echo "table $t"
  done
  ip -o addr show dev lo | awk '{ print $4 }' | grep -qxF 10.96.0.10/32 && echo "lo 10.96.0.10/32"
  return 0
}
NODE_NET_BEFORE=$(node_net_objects)
release_node_network() {
  local obj
  if pgrep -x berth >/dev/null; then
    [ -z "$(node_net_objects)" ] || say "a berth runs on this host: leaving its node network as it is"
    return 0
  fi
  while read -r obj; do
    [ -n "$obj" ] && ! grep -qxF "$obj" <<<"$NODE_NET_BEFORE" || continue
    case $obj in
      "link "*) ip link delete "${obj#link }" ;;
      # shellcheck disable=SC2086
      "table "*) nft delete table ${obj#table } ;;
      "lo "*) ip addr del "${obj#lo }" dev lo ;;
    esac 2>/dev/null && say "removed $obj (made in the root)"
  done <<<"$(node_net_objects)"
  return 0
}
cleanup() {
  local rc=$? m
  trap - EXIT INT TERM
  if [ -n "${STEP_PID:-}" ]; then # interrupted during a step: end it
    # unshare blocks SIGTERM and SIGINT while it waits for its child: SIGKILL it.
    say "stopping the step (unshare, pid $STEP_PID; everything in its PID namespace dies with it)"
    kill -KILL "$STEP_PID" 2>/dev/null || true
    wait "$STEP_PID" 2>/dev/null || true
  fi
  [ ! -d "${ROOT:-}" ] || release_bridges
  release_node_network
  # Everything was mounted in private namespaces that are gone by now; this is a guard.
  for m in $(mounts_under "$WORK" | sort -r); do umount -l "$m" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then
    say "KEEP=1: the root stays at $ROOT (remove with: rm -rf --one-file-system $WORK)"
  elif [ -n "$(mounts_under "$WORK")" ]; then
    say "warning: mounts remain under $WORK; not removing it"
  else
    rm -rf --one-file-system "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

t_prep=$SECONDS
mkdir -m 0755 "$ROOT"
say "extracting $TARBALL into $ROOT"
tar -C "$ROOT" --numeric-owner --xattrs --xattrs-include='*' -xpf "$TARBALL"

# apt: the host's Debian sources.
{
  echo "# The host's Debian sources (scripts/fresh-check.sh)"
  for line in "${SOURCES[@]}"; do echo "deb $line"; done
} >"$ROOT/etc/apt/sources.list"
if apt-config dump | grep -q '^Acquire::Check-Valid-Until "false";'; then
  # The host's mirror is a dated snapshot whose Release files may be past Valid-Until.
  printf 'Acquire::Check-Valid-Until "false";\nAcquire::Check-Date "false";\n' \
    >"$ROOT/etc/apt/apt.conf.d/99fresh-check-snapshot-mirror"
fi

# Debian's maintainer scripts start and restart services with invoke-rc.d (with
# deb-systemd-invoke only under a running systemd, which the root has not), and
# invoke-rc.d asks /usr/sbin/policy-rc.d first: exit status 101 means "action
# forbidden". Without it, installing containerd, etcd-server, docker-registry,
# lxcfs... in the root would start those daemons from /etc/init.d, on the host's
# network and ports, in the way of the tests (which start what they need themselves)
# and of the root's removal.
cat >"$ROOT/usr/sbin/policy-rc.d" <<'EOF'
#!/bin/sh
# scripts/fresh-check.sh: no daemons start during package installs in this chroot.
exit 101
EOF
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"

# This network's site settings (see the header).
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n' \
  "$(cat /proc/sys/kernel/hostname)" >"$ROOT/etc/hosts"
cat /proc/sys/kernel/hostname >"$ROOT/etc/hostname"
if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
  mkdir -p "$ROOT/usr/local/share/ca-certificates"
  cp -a /usr/local/share/ca-certificates/. "$ROOT/usr/local/share/ca-certificates/"
fi
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$ROOT/etc/pip.conf"

# The repository, without target/ or anything git ignores.
say "copying $REPO into the root as /root/berth (git ls-files -co --exclude-standard)"
mkdir -p "$ROOT/root/berth"
git -C "$REPO" ls-files -z -co --exclude-standard |
  while IFS= read -r -d '' f; do
    case $f in target/* | */target/*) continue ;; esac
    if [ -e "$REPO/$f" ] || [ -L "$REPO/$f" ]; then printf '%s\0' "$f"; fi # skip deleted files
  done |
  tar -C "$REPO" --null --no-recursion -T - -cf - | tar -C "$ROOT/root/berth" -xf -

# The Rust toolchain (see the header): ~/.rustup and ~/.cargo/bin, nothing else.
if [ "${FRESH_RUST:-copy}" = copy ]; then
  say "copying the host's Rust toolchain ($RUSTUP_SRC, $CARGO_SRC/bin) into /root"
  mkdir -p "$ROOT/root/.cargo"
  cp -a "$RUSTUP_SRC" "$ROOT/root/.rustup"
  cp -a "$CARGO_SRC/bin" "$ROOT/root/.cargo/bin"
  if [ -f "$CARGO_SRC/env" ]; then
    cp "$CARGO_SRC/env" "$ROOT/root/.cargo/env"
  else # what rustup writes
    cat >"$ROOT/root/.cargo/env" <<'EOF'
#!/bin/sh
# rustup shell setup
case ":${PATH}:" in
    *:"$HOME/.cargo/bin":*) ;;
    *) export PATH="$HOME/.cargo/bin:$PATH" ;;
esac
EOF
  fi
  if [ ! -x "$ROOT/root/.cargo/bin/cargo-nextest" ] && nextest=$(command -v cargo-nextest); then
    say "cargo-nextest is at $nextest on this host, not in ~/.cargo/bin; copying it to /root/.cargo/bin"
    cp "$nextest" "$ROOT/root/.cargo/bin/cargo-nextest"
  fi
fi
t_prep=$((SECONDS - t_prep))
say "root ready in $(hms "$t_prep"): $ROOT"

# ---- entering the root -------------------------------------------------------------
# Runs inside new mount and PID namespaces (unshare --fork makes this shell their PID 1:
# when it exits, the kernel kills everything left in the PID namespace, and the mount
# namespace with all mounts below goes away). $1: the root; $2: a bash command to run
# in it as root; the rest: VAR=value for its environment.
#
# It switches to the root with pivot_root (then detaches the host's tree), not a bare
# chroot: in a chroot whose / is not a mount point, `unshare --mount` fails ("cannot
# change root filesystem propagation") and so does pivot_root(2), which runc, crun and
# berth-runtime use -- the root must be a mount point, as on a real machine.
# shellcheck disable=SC2016 # expanded inside, not here
INNER='
set -euo pipefail
root=$1 cmd=$2; shift 2
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /sys/fs/cgroup "$root/sys/fs/cgroup"
mount --rbind /dev "$root/dev"
mountpoint -q "$root/dev/pts" ||
  mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$root/dev/pts"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root/run"
mkdir -m 1777 "$root/run/lock"
[ "$FRESH_TMP" != tmpfs ] || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
cd "$root"
pivot_root . mnt  # the host tree goes to /mnt ...
cd /
umount -l /mnt    # ... and away
rc=0
/usr/bin/env -i "$@" /bin/bash -c "$cmd" || rc=$?
exit "$rc"
'
ENV=(HOME=/root USER=root LOGNAME=root SHELL=/bin/bash LANG=C.UTF-8 "TERM=${TERM:-dumb}"
  PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY CARGO_BUILD_JOBS; do
  [ -z "${!v:-}" ] || ENV+=("$v=${!v}")
done
# Becomes (exec) the unshare process: run it in a subshell or in the background.
# --kill-child: if unshare dies, however it dies, the namespace's PID 1 gets SIGKILL.
in_root() {
  FRESH_TMP=${FRESH_TMP:-} exec unshare --mount --propagation private --pid --fork --kill-child -- \
    bash -c "$INNER" fresh-check-root "$ROOT" "$1" "${ENV[@]}"
}

# Runs step $1 (a label: the log's name) as the bash command $3 in the root, logging to
# $LOG_DIR/$1.log; $2 names it in messages.
declare -A TIMES
step() {
  local name=$1 what=$2 cmd=$3 log=$LOG_DIR/$1.log t0=$SECONDS rc=0 logfd tee_pid
  say "running $what in the root; log: $log"
  # In the background, with `wait`, so that a signal to this script runs its trap at
  # once (which ends the step by killing unshare, $STEP_PID) instead of after the step.
  exec {logfd}> >(tee "$log")
  tee_pid=$!
  in_root "$cmd" </dev/null >&"$logfd" 2>&1 &
  STEP_PID=$!
  wait "$STEP_PID" || rc=$?
  STEP_PID=
  release_bridges
  release_node_network
  exec {logfd}>&-
  wait "$tee_pid" || true
  TIMES[$name]=$((SECONDS - t0))
  if [ "$rc" -ne 0 ]; then
    say "FAILED: $what exited with status $rc after $(hms "${TIMES[$name]}") in a clean $LABEL root"
    say "log: $log"
    exit "$rc"
  fi
  say "ok: $what in $(hms "${TIMES[$name]}")"
}

# shellcheck disable=SC2016 # expanded in the root
ENTER_CHECKS='set -ex
cat /etc/debian_version /etc/apt/sources.list
test -x /usr/sbin/policy-rc.d
apt-get update -q
ls /root/.cargo/bin
cargo --version
rustc --version
cargo fmt --version
cargo clippy --version
cargo nextest --version
unshare --net true
unshare --mount --pid --fork true
unshare --user --map-root-user true
d=$(mktemp -d) && unshare --mount --propagation private sh -ec "mount -t tmpfs t $d; mkdir $d/old; cd $d; pivot_root . old; echo pivot_root works"
cat /proc/self/cgroup
ls /sys/fs/cgroup
grep -E " / | /proc | /sys| /dev| /run| /tmp " /proc/self/mountinfo
ls -l /dev/fuse /dev/net/tun /dev/kvm /dev/ptmx || true  # (diagnostics: not fatal)
getent hosts deb.debian.org index.crates.io static.crates.io pypi.org || true
echo "PID 1 here: $(cat /proc/1/comm)"
'

cd_repo='cd /root/berth &&'
case $STEPS in
  enter) step enter "the FRESH_STEPS=enter checks" "$ENTER_CHECKS" ;;
  shell)
    say "interactive shell in the root (exit to end; the root is removed unless KEEP=1)"
    rc=0
    (in_root "$cd_repo exec bash -i") || rc=$?
    say "the shell exited with status $rc"
    exit "$rc" ;;
  deps) step deps scripts/deps.sh "$cd_repo scripts/deps.sh" ;;
  setup | all)
    step setup scripts/setup.sh "$cd_repo scripts/setup.sh"
    if [ "$STEPS" = all ]; then
      args=""
      [ ${#test_args[@]} -eq 0 ] || args=$(printf ' %q' "${test_args[@]}")
      step test "scripts/test.sh$args" "$cd_repo scripts/test.sh$args"
    fi ;;
esac

times="prepare $(hms "$t_prep")"
for s in enter deps setup test; do [ -z "${TIMES[$s]:-}" ] || times+=", $s $(hms "${TIMES[$s]}")"; done
case $STEPS in
  all) say "passed (setup.sh and test.sh in a clean $LABEL root)" ;;
  setup) say "passed (setup.sh in a clean $LABEL root; test.sh not run: FRESH_STEPS=setup)" ;;
  deps) say "passed (deps.sh in a clean $LABEL root; FRESH_STEPS=deps)" ;;
  enter) say "entered a clean $LABEL root and ran the checks (FRESH_STEPS=enter)" ;;
esac
say "elapsed: $times; total $(hms "$SECONDS"); logs in $LOG_DIR"
