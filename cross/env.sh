# Shared by cross/build, cross/test and cross/check-no-std: the Debian cross toolchain,
# installed on demand, and the environment that makes cargo use it.
#
# Sourced, not run. Knows two targets: aarch64 (CI) and armv7 (same recipe, untested in CI).

# Debian's rustc-web/cargo-web install as /usr/bin/rustc and /usr/bin/cargo; rustup's
# proxies live in ~/.cargo/bin and usually come first in PATH, so name them by full path.
DEB_CARGO=/usr/bin/cargo
DEB_RUSTC=/usr/bin/rustc
DEB_RUSTDOC=/usr/bin/rustdoc

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The Debian toolchain gets its own target dir: sharing target/ with rustup's 1.95 would make
# each toolchain invalidate the other's host artifacts (build scripts, proc macros).
CROSS_TARGET_DIR="${CROSS_TARGET_DIR:-$ROOT/target/cross}"

die() { printf 'cross: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'cross: %s\n' "$*" >&2; }

# select_target NAME: sets TRIPLE, DEB_ARCH, GNU_PREFIX, QEMU for a short target name.
select_target() {
    case "${1:-}" in
        aarch64 | aarch64-unknown-linux-gnu)
            TRIPLE=aarch64-unknown-linux-gnu DEB_ARCH=arm64 GNU_PREFIX=aarch64-linux-gnu QEMU=qemu-aarch64 ;;
        armv7 | armv7-unknown-linux-gnueabihf)
            TRIPLE=armv7-unknown-linux-gnueabihf DEB_ARCH=armhf GNU_PREFIX=arm-linux-gnueabihf QEMU=qemu-arm ;;
        "") die "missing target: use 'aarch64' (or 'armv7')" ;;
        *) die "unknown target '$1': use 'aarch64' (or 'armv7')" ;;
    esac
    # Where qemu-user finds the ARM loader and libc. Not simply /usr/$GNU_PREFIX (the cross
    # libc): libstd-rust-web-dev:$DEB_ARCH pulls in the multiarch libc6:$DEB_ARCH, and the cross
    # loader then finds that libc first in /lib/$GNU_PREFIX; a loader and a libc from two
    # different glibc builds hang in the first pthread_create (seen: 2.36-8cross1 loader
    # with 2.36-9+deb12u14 libc; every test harness spawns threads). With "/" qemu uses the
    # multiarch loader and libc, which always match.
    if [ -e "/lib/$GNU_PREFIX/libc.so.6" ]; then SYSROOT=/; else SYSROOT=/usr/$GNU_PREFIX; fi
    TRIPLE_ENV=$(printf '%s' "$TRIPLE" | tr 'a-z-' 'A-Z_')
    BIN_DIR="$CROSS_TARGET_DIR/$TRIPLE/release"
}

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# ensure_toolchain: installs the Debian packages that are missing (needs root and apt).
ensure_toolchain() {
    local pkgs=(rustc-web cargo-web "libstd-rust-web-dev:$DEB_ARCH" "gcc-$GNU_PREFIX"
        "libc6-dev-$DEB_ARCH-cross" "binutils-$GNU_PREFIX" qemu-user curl)
    local missing=() p
    for p in "${pkgs[@]}"; do pkg_installed "$p" || missing+=("$p"); done
    if ((${#missing[@]})); then
        [ "$(id -u)" = 0 ] || die "missing packages (${missing[*]}); run as root or: apt-get install ${missing[*]}"
        command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get: this path needs Debian 12 or later"
        say "installing: ${missing[*]}"
        dpkg --print-foreign-architectures | grep -qx "$DEB_ARCH" || dpkg --add-architecture "$DEB_ARCH"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
    check_rust_version
}

# The workspace's rust-version must not exceed what Debian ships (bookworm-security has 1.96).
check_rust_version() {
    local want have
    want=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$ROOT/Cargo.toml" | head -n1)
    have=$("$DEB_RUSTC" -V | awk '{print $2}')
    [ -n "$want" ] || die "no rust-version in $ROOT/Cargo.toml"
    if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1)" != "$want" ]; then
        die "Debian rustc is $have but the workspace needs $want: apt-get update && apt-get install rustc-web cargo-web (bookworm-security ships 1.96)"
    fi
    say "Debian toolchain: $("$DEB_RUSTC" -V) / $("$DEB_CARGO" -V)"
}

# deb_cargo ARGS...: runs Debian's cargo for $TRIPLE with our linker, C compiler and runner.
deb_cargo() {
    env -u RUSTUP_TOOLCHAIN -u RUSTC_WRAPPER \
        PATH="/usr/bin:/bin:/usr/sbin:/sbin:$PATH" \
        RUSTC="$DEB_RUSTC" RUSTDOC="$DEB_RUSTDOC" \
        CARGO_TARGET_DIR="$CROSS_TARGET_DIR" \
        "CARGO_TARGET_${TRIPLE_ENV}_LINKER=$GNU_PREFIX-gcc" \
        "CARGO_TARGET_${TRIPLE_ENV}_RUNNER=$QEMU -L $SYSROOT" \
        "CC_${TRIPLE//-/_}=$GNU_PREFIX-gcc" \
        "AR_${TRIPLE//-/_}=$GNU_PREFIX-ar" \
        "$DEB_CARGO" "$@"
}
