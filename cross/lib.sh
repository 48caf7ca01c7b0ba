#!/usr/bin/env bash
# Shared by cross/build, cross/test and cross/setup: what each target needs and where its cargo
# settings live. Sourced, not run.

# The repository root, whatever the caller's directory.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CROSS="$ROOT/cross"

# The targets a firmware image is built for; `cross/build` with no target builds these.
DEVICE_TARGETS=(aarch64-unknown-linux-gnu aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf)

# The cargo config (linker, runner, C compiler per target) for a target; empty for the host.
config_of() {
  case "$1" in
    aarch64-unknown-linux-gnu) echo "$CROSS/aarch64.toml" ;;
    aarch64-unknown-linux-musl) echo "$CROSS/aarch64-musl.toml" ;;
    armv7-unknown-linux-gnueabihf) echo "$CROSS/armv7.toml" ;;
    x86_64-unknown-linux-musl) echo "$CROSS/x86_64-musl.toml" ;;
    x86_64-unknown-linux-gnu) echo "" ;;
    *) die "unknown target $1 (known: ${DEVICE_TARGETS[*]} x86_64-unknown-linux-gnu x86_64-unknown-linux-musl)" ;;
  esac
}

# Debian packages a target needs: the cross compiler and libc headers, the emulator for tests.
packages_of() {
  case "$1" in
    # libc6:arm64 puts the aarch64 loader at /lib/ld-linux-aarch64.so.1, where binfmt_misc's
    # qemu finds it for a child started with a cleared environment (no QEMU_LD_PREFIX).
    aarch64-unknown-linux-gnu) echo gcc-aarch64-linux-gnu libc6-dev-arm64-cross libc6:arm64 qemu-user qemu-user-binfmt ;;
    # musl-dev:arm64 brings aarch64-linux-musl-gcc (gcc over musl's headers) for C code.
    aarch64-unknown-linux-musl) echo gcc-aarch64-linux-gnu musl-dev:arm64 qemu-user qemu-user-binfmt ;;
    armv7-unknown-linux-gnueabihf) echo gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user qemu-user-binfmt ;;
    x86_64-unknown-linux-musl) echo musl-tools ;;
    x86_64-unknown-linux-gnu) echo ;;
  esac
}

# The Debian architecture whose packages a target needs besides the host's (musl-dev:arm64,
# libc6:arm64).
foreign_arch_of() {
  case "$1" in
    aarch64-unknown-linux-musl | aarch64-unknown-linux-gnu) echo arm64 ;;
    *) echo ;;
  esac
}

# The binfmt_misc entry (from qemu-user-binfmt) that lets the kernel exec the target's binaries.
binfmt_of() {
  case "$1" in
    aarch64-*) echo qemu-aarch64 ;;
    armv7-*) echo qemu-arm ;;
    *) echo ;;
  esac
}

# The cross binutils prefix, for strip/objdump/nm on the target's binaries.
binutils_prefix_of() {
  case "$1" in
    aarch64-*) echo aarch64-linux-gnu- ;;
    armv7-*) echo arm-linux-gnueabihf- ;;
    *) echo ;;
  esac
}

# `cargo` with the target's config, if it has one.
cargo_for() {
  local target=$1
  shift
  local config
  config=$(config_of "$target")
  if [ -n "$config" ]; then
    cargo --config "$config" "$@"
  else
    cargo "$@"
  fi
}

die() {
  echo "cross: $*" >&2
  exit 1
}

step() { printf '\n=== %s\n' "$*" >&2; }

is_root() { [ "$(id -u)" = 0 ]; }

# Tools from crates.io, pinned. Each is installed once (`cargo install --locked`) into its own
# versioned directory under EDGEGW_TOOLS (default /var/cache/edgegw-tools as root, else
# ~/.cache/edgegw-tools), so a version bump here installs the new one beside the old.
declare -A TOOL_VERSION=(
  [cargo-auditable]=0.7.7
  [cargo-deny]=0.20.2
  [cargo-bloat]=0.12.1
  [cargo-deb]=3.8.0
)
tools_root() {
  if [ -n "${EDGEGW_TOOLS:-}" ]; then
    echo "$EDGEGW_TOOLS"
  elif is_root; then
    echo /var/cache/edgegw-tools
  else
    echo "${XDG_CACHE_HOME:-$HOME/.cache}/edgegw-tools"
  fi
}

# The directory holding tool $1's binary, installing it first if it is not there.
tool_dir() {
  local name=$1 version=${TOOL_VERSION[$1]:?no pinned version for $1}
  local root dir
  root=$(tools_root)
  dir="$root/$name-$version/bin"
  if [ ! -x "$dir/$name" ]; then
    echo "cross: installing $name $version into $root (once; cargo install --locked)" >&2
    local start=$SECONDS
    nice -n 15 cargo install --locked --quiet --root "$root/$name-$version" \
      --target-dir "$root/build" "$name@$version" >&2
    echo "cross: installed $name $version in $((SECONDS - start)) s" >&2
  fi
  echo "$dir"
}

# What makes two builds of one commit byte-identical wherever they run.
reproducible_env() {
  # Nothing in the binary reads the clock today; tools that stamp a date (the SBOM) use this.
  if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)
  fi
  export SOURCE_DATE_EPOCH
  # C objects (ring's) carry their source paths in debug info and __FILE__: make them relative.
  local cflags
  cflags=$(remap_pairs | sed 's/^/-ffile-prefix-map=/' | tr '\n' ' ')
  export CFLAGS="${CFLAGS:-} $cflags"
}

# FROM=TO pairs: the checkout, its target directory and cargo's source directories become
# relative paths (`daemon/src/..`, `tokio-1.54.1/src/..`), as cargo's trim-paths would make them.
remap_pairs() {
  local cargo_home=${CARGO_HOME:-$HOME/.cargo} d
  echo "$ROOT="
  if [ -n "${CARGO_TARGET_DIR:-}" ]; then echo "$CARGO_TARGET_DIR=target"; fi
  for d in "$cargo_home"/registry/src/*/ "$cargo_home"/git/checkouts/; do
    [ -d "$d" ] && echo "${d%/}="
  done
  return 0
}

# The remapping as a TOML array of rustflags, for --config target.TRIPLE.rustflags=...
remap_rustflags() {
  local flags=() pair
  while IFS= read -r pair; do flags+=("'--remap-path-prefix=$pair'"); done < <(remap_pairs)
  local IFS=,
  echo "[${flags[*]}]"
}

# The budget for the stripped static aarch64 musl binary: devices with small flash.
SIZE_BUDGET=$((3 * 1024 * 1024))
check_size_budget() {
  local size
  size=$(stat -c %s "$1")
  if [ "$size" -gt "$SIZE_BUDGET" ]; then
    die "$1 is $size bytes, over the budget of $SIZE_BUDGET (3 MiB) by $((size - SIZE_BUDGET)): see cross/README.md (Size) for what takes the space"
  fi
  echo "cross: size budget: $size of $SIZE_BUDGET bytes ($((SIZE_BUDGET - size)) to spare)" >&2
  # The file does not grow byte by byte: the linker aligns the end of the RELRO segment to the
  # maximum page size (64 KiB on aarch64), so the file steps by up to that much when the code,
  # read-only data and RELRO part cross a multiple of it. Say how far the next step is.
  local text relro align room
  read -r text align < <(readelf -lW "$1" | awk '$1 == "LOAD" { print $5, $NF; exit }')
  relro=$(readelf -lW "$1" | awk '$1 == "GNU_RELRO" { print $6 }')
  if [ -n "$text" ] && [ -n "$relro" ] && [ $((align)) -gt 0 ]; then
    text=$((text)) relro=$((relro)) align=$((align))
    room=$(((align - (text + relro) % align) % align))
    if [ $((size + align)) -gt "$SIZE_BUDGET" ]; then
      echo "cross: size budget: the next ${align}-byte step comes after $room more bytes of code or read-only data, and takes the file over the budget: $room is what is really left" >&2
    else
      echo "cross: size budget: the next ${align}-byte step comes after $room more bytes of code or read-only data" >&2
    fi
  fi
}

# Checks what a target promises: musl builds are static; glibc builds name their glibc floor.
check_binary() {
  local target=$1 bin=$2 desc
  desc=$(file -b "$bin")
  case "$target" in
    *-musl)
      grep -q 'statically linked' <<<"$desc" || die "$bin is not statically linked: $desc"
      ;;
    *-gnu*)
      echo "cross: $target needs glibc $(glibc_floor "$target" "$bin") or newer" >&2
      ;;
  esac
  if grep -q 'not stripped' <<<"$desc"; then die "$bin is not stripped: $desc"; fi
}

# The newest GLIBC_x.y symbol version a dynamically linked binary asks for.
glibc_floor() {
  "$(binutils_prefix_of "$1")objdump" -T "$2" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' |
    sort -t. -k1,1n -k2,2n -k3,3n | tail -1
}
