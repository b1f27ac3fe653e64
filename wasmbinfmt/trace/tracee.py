"""A tracee's memory and what /proc says about it.

Memory is read and written with process_vm_readv/writev (one call per
transfer, through buffers allocated once). Remote ranges are split at page
boundaries: the kernel does not split one iovec on a fault, so without this a
string that ends just before an unmapped page could not be read.
"""

from __future__ import annotations

import ctypes
import os

from ..util.abcs import Callable
from .kernel import IoVec, vm_readv, vm_writev
from .paths import host_path, resolve_in_root

PAGE = os.sysconf("SC_PAGE_SIZE")
PATH_MAX = 4096
SHORT_STRING = 256
MAX_IOVECS = 1024  # IOV_MAX
MAX_ARGV_BYTES = 64 << 20  # far beyond ARG_MAX: a longer argv array is the kernel's to refuse
O_CLOEXEC_FLAG = 0o2000000


class Memory:
    """Transfers to and from one tracee at a time, through one growing buffer."""

    def __init__(self, size: int = 1 << 16):
        self._buffer = ctypes.create_string_buffer(size)
        self._view = memoryview(self._buffer).cast("B")  # slicing it copies only what was read
        self._local = (IoVec * MAX_IOVECS)()
        self._remote = (IoVec * MAX_IOVECS)()

    def _grow(self, size: int) -> None:
        self._buffer = ctypes.create_string_buffer(max(size, 2 * len(self._view)))
        self._view = memoryview(self._buffer).cast("B")

    def _split(self, address: int, length: int) -> int:
        """Fill the iovecs for `length` bytes at `address`, one per page; how many are used."""
        local, remote = self._local, self._remote
        first = min(length, PAGE - address % PAGE)
        local[0].len = remote[0].len = first
        local[0].base, remote[0].base = ctypes.addressof(self._buffer), address
        if first == length:
            return 1  # most reads: a string or a pointer array within one page
        base = local[0].base
        count, done = 1, first
        while done < length and count < MAX_IOVECS:
            step = min(length - done, PAGE)
            local[count].base, local[count].len = base + done, step
            remote[count].base, remote[count].len = address + done, step
            count, done = count + 1, done + step
        return count

    def read(self, tid: int, address: int, length: int) -> bytes:
        """Up to `length` bytes at `address`: fewer where an unmapped page starts."""
        length = min(length, (MAX_IOVECS - 1) * PAGE)
        if length > len(self._view):
            self._grow(length)
        try:
            n = vm_readv(tid, self._local, self._remote, self._split(address, length))
        except OSError:
            return b""
        return self._view[:n].tobytes()

    def write(self, tid: int, address: int, data: bytes) -> bool:
        """Write all of `data` at `address`; False if any of it could not be written."""
        done = 0
        while done < len(data):
            chunk = data[done:done + (MAX_IOVECS - 1) * PAGE]
            if len(chunk) > len(self._view):
                self._grow(len(chunk))
            self._view[:len(chunk)] = chunk
            try:
                n = vm_writev(tid, self._local, self._remote,
                              self._split(address + done, len(chunk)))
            except OSError:
                return False
            if n != len(chunk):
                return False
            done += n
        return True

    def read_string(self, tid: int, address: int, limit: int = PATH_MAX) -> bytes | None:
        """The NUL-terminated string at `address`, or None if unreadable or longer than `limit`."""
        # Most strings are short: one small single-iovec read first.
        data = self.read(tid, address, min(limit + 1, SHORT_STRING, PAGE - address % PAGE))
        end = data.find(b"\0")
        if end < 0 and len(data) < limit + 1:
            data = self.read(tid, address, limit + 1)
            end = data.find(b"\0")
        return data[:end] if end >= 0 else None

    def read_pointers(self, tid: int, address: int) -> list[int] | None:
        """The NULL-terminated pointer array at `address` (argv, envp), or None if unreadable."""
        words: list[int] = []
        chunk = PAGE
        while len(words) * 8 < MAX_ARGV_BYTES:
            data = self.read(tid, address + len(words) * 8, chunk)
            more = memoryview(data[:len(data) - len(data) % 8]).cast("Q").tolist()
            try:
                end = more.index(0)
            except ValueError:
                if len(data) < chunk:
                    return None  # ran into an unmapped page: the kernel's EFAULT
                words.extend(more)
                chunk = min(chunk * 4, (MAX_IOVECS - 1) * PAGE)
                continue
            words.extend(more[:end])
            return words
        return None


def stack_mapping(tid: int, stack_pointer: int) -> tuple[int, int, bool] | None:
    """(low, high, whether it is the main stack) of the mapping `stack_pointer` is in."""
    with open(f"/proc/{tid}/maps", "rb") as maps:
        for line in maps:
            start, _, rest = line.partition(b"-")
            end = rest.split(b" ", 1)[0]
            low, high = int(start, 16), int(end, 16)
            if low < stack_pointer <= high:
                return low, high, line.rstrip().endswith(b" [stack]")
    return None


def fd_is_cloexec(tid: int, fd: int) -> bool:
    try:
        with open(f"/proc/{tid}/fdinfo/{fd}", "rb") as info:
            for line in info:
                if line.startswith(b"flags:"):
                    return bool(int(line.split()[1], 8) & O_CLOEXEC_FLAG)
    except OSError:
        pass
    return False


def stat_field(pid: int | str, number: int) -> int:
    """Field `number` (1-based, as proc(5) counts) of /proc/PID/stat; the command name
    (field 2) may hold spaces and parentheses, so fields are counted after its last ')'."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return int(stat.read().rsplit(b")", 1)[1].split()[number - 3])


def fs_credentials(tid: int) -> tuple[int, int, list[int]]:
    """(fsuid, fsgid, supplementary groups): what the kernel checks file access with."""
    uid = gid = 0
    groups: list[int] = []
    with open(f"/proc/{tid}/status", "rb") as status:
        for line in status:
            if line.startswith(b"Uid:"):
                uid = int(line.split()[4])
            elif line.startswith(b"Gid:"):
                gid = int(line.split()[4])
            elif line.startswith(b"Groups:"):
                groups = [int(g) for g in line.split()[1:]]
                break
    return uid, gid, groups


def status_fields(pid: int | str) -> dict[bytes, bytes]:
    """Every field of /proc/PID/status: name to value, as bytes."""
    with open(f"/proc/{pid}/status", "rb") as f:
        return dict(line.partition(b":\t")[::2] for line in f.read().splitlines())


def ignored_signals(tid: int) -> int:
    """The signals `tid` ignores (SigIgn of /proc/TID/status), as a mask: bit N-1 for N."""
    with open(f"/proc/{tid}/status", "rb") as status:
        for line in status:
            if line.startswith(b"SigIgn:"):
                return int(line.split()[1], 16)
    return 0


def tracer_of(pid: int | str) -> int:
    """The pid tracing `pid` (0 for none), from TracerPid in /proc/PID/status."""
    with open(f"/proc/{pid}/status", "rb") as status:
        for line in status:
            if line.startswith(b"TracerPid:"):
                return int(line.split()[1])
    return 0


def children(tid: int) -> list[int]:
    """The processes thread `tid` has forked and that are still there."""
    try:
        with open(f"/proc/{tid}/task/{tid}/children", "rb") as f:
            return [int(pid) for pid in f.read().split()]
    except OSError:
        return []


def command_name(pid: int | str) -> str:
    """The process's name (comm), for messages; "?" once it is gone."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as comm:
            return comm.read().strip().decode("utf-8", "replace")
    except OSError:
        return "?"


def root_identity(pid: int | str) -> tuple | None:
    """A process's root: its directory's identity and its mount namespace."""
    try:
        st = os.stat(f"/proc/{pid}/root")
        return st.st_dev, st.st_ino, os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def tracee_path(tid: int, name: bytes, in_our_root: Callable[[], bool],
                follow: bool = True) -> bytes:
    """A path the tracer can open for `name` as the tracee's exec names it (host_path).
    Where the tracee's root is not ours (`in_our_root()` false: a chroot, another mount
    namespace), the name is resolved in its root first (paths.resolve_in_root): through
    /proc/TID/root an absolute symlink would lead into ours. `follow`: whether a last
    symlink is followed."""
    path = host_path(tid, name)
    proc = b"/proc/%d" % tid
    if not path.startswith((proc + b"/root/", proc + b"/cwd/")) or in_our_root():
        return path  # a descriptor, /proc/self: the kernel's; or our own root
    root = proc + b"/root"
    start = b"/" if name.startswith(b"/") else _cwd_in_root(tid)
    if start is None:
        return path

    def readlink(inside: bytes) -> bytes | None:
        try:
            return os.readlink(root + inside)
        except OSError:  # not a symlink, or not there
            return None
    return root + resolve_in_root(name, start, readlink, follow)


def _cwd_in_root(tid: int) -> bytes | None:
    """The tracee's working directory as a path from its own root, where it is under it."""
    try:
        cwd = os.readlink(b"/proc/%d/cwd" % tid)
        root = os.readlink(b"/proc/%d/root" % tid)
    except OSError:
        return None
    if root == b"/":
        return cwd
    if cwd == root or cwd.startswith(root + b"/"):
        return cwd[len(root):] or b"/"
    return None
