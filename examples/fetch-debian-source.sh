#!/bin/sh
# Download a project's upstream source as Debian ships it (the package's .orig tarball, not
# Debian's patches) and unpack it; prints the directory made.
#   examples/fetch-debian-source.sh PACKAGE DIR
# Needs deb-src entries in apt's sources: as root, this adds them (a copy of the deb entries)
# when apt has none; otherwise it says what to add.
set -eu
package=$1
dest=$2
mkdir -p "$dest"
if ! apt-get source --print-uris "$package" >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "fetch-debian-source: apt knows no source packages; as root, add deb-src entries" \
             "(Types: deb-src in /etc/apt/sources.list.d/*.sources) and run apt-get update" >&2
        exit 2
    fi
    list=/etc/apt/sources.list.d/wasmbinfmt-deb-src
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$list.sources"
    else
        sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > "$list.list"
    fi
    apt-get update -qq
fi
download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT
# Only the .orig tarball is needed: a mirror that lacks Debian's own files of a security
# update (seen here) still serves it, so apt-get's failure alone is not fatal.
(cd "$download" && apt-get source -qq --download-only "$package" 2>/dev/null) || true
tarball=$(ls "$download"/*.orig.tar.* 2>/dev/null) || {
    echo "fetch-debian-source: no upstream tarball of $package could be downloaded" >&2
    exit 1
}
top=$(tar tf "$tarball" | head -1 | cut -d/ -f1)
rm -rf "${dest:?}/$top"
tar xf "$tarball" -C "$dest"
echo "$dest/$top"
