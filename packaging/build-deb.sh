#!/usr/bin/env bash
# Builds the Debian package: target/debian/dmvpnd_<version>_<arch>.deb, then runs lintian on it
# (fails on any lintian error). One command, installs what it needs itself:
#
#   packaging/build-deb.sh
#
# Steps: cargo-deb (cargo install --locked, if missing) and lintian (apt-get, if missing);
# release build of dmvpnd, dmvpnctl and the generator packaging/gen; the generator writes the
# man pages and dmvpnctl completions to target/release/packaging/; cargo deb packages them with
# the stripped binaries (metadata: [package.metadata.deb] in daemon/Cargo.toml).
# Environment: CARGO_TARGET_DIR is honoured; DEB_NO_LINTIAN=1 skips lintian.
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb: installing cargo-deb" >&2
    cargo install cargo-deb --locked
fi

target=${CARGO_TARGET_DIR:-target}
cargo build --release --locked -p dmvpnd -p dmvpnctl -p dmvpn-packaging

out=$target/release/packaging
rm -rf "$out"
# Reproducible dates in the man pages: the last commit's time.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)} \
    "$target/release/dmvpn-gen" "$out" >/dev/null
gzip -9n "$out"/man/*

# --strip: the release profile keeps line tables (debug = 1), which cargo-deb would otherwise keep.
cargo deb -p dmvpnd --no-build --strip --output "$target/debian/"
deb=$(ls -t "$target"/debian/dmvpnd_*.deb | head -n1)
echo "build-deb: $deb"

if [ "${DEB_NO_LINTIAN:-0}" != 1 ]; then
    if ! command -v lintian >/dev/null 2>&1; then
        echo "build-deb: installing lintian" >&2
        if [ "$(id -u)" = 0 ]; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends lintian
        else
            sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends lintian
        fi
    fi
    # Errors fail the build; warnings and infos are printed (overrides, each with its reason, are
    # in the package: usr/share/lintian/overrides/dmvpnd).
    lintian --info --display-info --fail-on error "$deb"
fi
