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
# Only the .orig tarball is needed. A mirror may lack some of a security update's files,
# or all of them (both seen here), so apt-get's failure alone is not fatal, and every
# version apt knows of is tried, newest first, until one gives the tarball.
tarball=
for version in "" $(apt-cache showsrc "$package" | sed -n 's/^Version: //p' | sort -ruV); do
    (cd "$download" && apt-get source -qq --download-only "$package${version:+=$version}" \
        >/dev/null 2>&1) || true
    tarball=$(ls "$download"/*.orig.tar.* 2>/dev/null) && break
done
[ -n "$tarball" ] || {
    echo "fetch-debian-source: no upstream tarball of $package could be downloaded" >&2
    exit 1
}
top=$(tar tf "$tarball" | head -1 | cut -d/ -f1)
rm -rf "${dest:?}/$top"
tar xf "$tarball" -C "$dest"
echo "$dest/$top"
