#!/bin/sh
# Builds the Debian package: target/debian/davpush_<version>-1_<arch>.deb (under
# $CARGO_TARGET_DIR when set). Needs cargo-deb (`cargo install cargo-deb --locked`).
#
# The release binary first, then what the package ships besides it, generated from the binary
# and examples/ (man pages, shell completions, /etc/davpush/*.toml with the data directory of
# the package), then `cargo deb --no-build` (assets: crates/cli/Cargo.toml).
set -eu
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-$PWD/target}"

cargo build --release --locked -p davpush
bin="$target/release/davpush"
assets="$target/release/deb-assets"
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"

"$bin" manual "$assets/man"
gzip -9n "$assets/man/"*.1
"$bin" completions bash >"$assets/completions/davpush"
"$bin" completions zsh >"$assets/completions/_davpush"
"$bin" completions fish >"$assets/completions/davpush.fish"

# The examples, with the package's data directory (the units' StateDirectory).
for name in davpush gateway; do
    {
        echo "# Installed by the davpush Debian package from examples/$name.toml: see"
        echo "# /usr/share/doc/davpush/operations.md. Data in /var/lib/davpush (mode 0700)."
        sed 's|^data_dir = "davpush-data"$|data_dir = "/var/lib/davpush"|' "examples/$name.toml"
    } >"$assets/$name.toml"
    grep -qx 'data_dir = "/var/lib/davpush"' "$assets/$name.toml" || {
        echo "build-deb.sh: examples/$name.toml has no 'data_dir = \"davpush-data\"' line to replace" >&2
        exit 1
    }
done

cargo deb -p davpush --no-build --locked
