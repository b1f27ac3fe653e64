"""Which tracees share their memory, and where a rewrite may write the new argv in each.

A rewritten exec needs its new argv and path in the tracee's memory. Below
the stack pointer is free only when nothing else lives there. A thread, a
vfork child and a posix_spawn child (clone with CLONE_VM) run in memory that
another tracee is using, and musl's posix_spawn child runs on a small array
inside its parent's live frame. So:

- Tracees are grouped by the clones that made them: a CLONE_VM child joins
  its parent's group, any other child starts its own. A member may have
  exec'd since (the tracer sees only the execs it rewrote), so the group is
  only who *may* share; kcmp(KCMP_VM) says who does.
- A tracee that shares with no one, running on the main stack (``[stack]``,
  where nothing but its own frames lives), gets the argv below its stack
  pointer, as far as the mapping goes. So does a vfork child whose only
  sharer is its suspended parent, when the child's stack pointer is below
  the parent's on that stack: below the parent's stack pointer nothing is live.
- Everyone else (threads, posix_spawn children, coroutine stacks, a stack
  with no room) writes into a scratch area: anonymous memory the tracee is
  made to mmap, kept for the later execs of that address space. An area
  starts with a random cookie, checked before each reuse, so memory that an
  exec has since replaced is never written.

Pure: the tracer feeds it the clone events and asks where to write.
"""

from __future__ import annotations

import os

COOKIE_SIZE = 16
AREA_MINIMUM = 16 << 10
STACK_MARGIN = 256  # bytes kept free at the low end of the main stack


class Area:
    """Scratch memory mapped in one address space."""

    __slots__ = ("address", "size", "cookie", "user")

    def __init__(self, address: int, size: int) -> None:
        self.address = address
        self.size = size
        self.cookie = os.urandom(COOKIE_SIZE)
        self.user = 0  # the tid whose exec is using it now, or 0


class Space:
    """Tracees that may share one address space, and the scratch areas mapped in it."""

    __slots__ = ("members", "areas", "uncertain")

    def __init__(self, tid: int, uncertain: bool = False) -> None:
        self.members = {tid}
        self.areas: list[Area] = []
        self.uncertain = uncertain  # made without its clone event: may share with anyone


def area_size(needed: int, page: int) -> int:
    """The size to map for `needed` bytes (with the cookie): at least AREA_MINIMUM, so that
    one area serves most later execs."""
    size = max(needed + COOKIE_SIZE, AREA_MINIMUM)
    return (size + page - 1) & ~(page - 1)


class Spaces:
    def __init__(self, root: int) -> None:
        self.of: dict[int, Space] = {root: Space(root)}
        # vfork child -> (its parent, the parent's stack pointer at the vfork)
        self.vfork_parents: dict[int, tuple[int, int]] = {}

    def cloned(self, parent: int, child: int, shares_memory: bool,
               vfork_stack: int | None = None) -> None:
        """A clone event of `parent`; `vfork_stack`: its stack pointer, for CLONE_VFORK."""
        if shares_memory:
            space = self.of.get(parent)
            if space is None:
                space = self.of[parent] = Space(parent)
            space.members.add(child)
            self.of[child] = space
            if vfork_stack is not None:
                self.vfork_parents[child] = (parent, vfork_stack)
        else:
            self.of[child] = Space(child)

    def unknown(self, tid: int) -> None:
        """A tracee whose clone event never came: it may share with anyone."""
        if tid not in self.of:
            self.of[tid] = Space(tid, uncertain=True)

    def left(self, tid: int) -> None:
        """`tid` exited, or exec'd: it no longer uses its space's memory."""
        space = self.of.pop(tid, None)
        self.vfork_parents.pop(tid, None)
        if space is None:
            return
        space.members.discard(tid)
        for area in space.areas:
            if area.user == tid:
                area.user = 0

    def exec_succeeded(self, tid: int) -> None:
        self.left(tid)
        self.of[tid] = Space(tid)

    def sharers(self, tid: int, same_memory) -> list[int]:
        """The other tracees that use `tid`'s memory now (same_memory(a, b): kcmp)."""
        space = self.of.get(tid)
        if space is None or space.uncertain:
            return [0]  # someone unknown
        return [m for m in space.members if m != tid and same_memory(tid, m)]

    def below_stack_allowed(self, tid: int, sharers: list[int], stack: int,
                            stack_mapping: tuple[int, int, bool] | None) -> bool:
        """Whether the memory below `stack` is `tid`'s own to write.
        stack_mapping: (low, high, is_main_stack) of the mapping holding `stack`."""
        if stack_mapping is None or not stack_mapping[2]:
            return False
        if not sharers:
            return True
        parent = self.vfork_parents.get(tid)
        if parent is None or sharers != [parent[0]]:
            return False
        low, high, _ = stack_mapping
        return stack <= parent[1] and low < parent[1] <= high

    def free_area(self, tid: int, size: int) -> Area | None:
        """A scratch area of `tid`'s space with room for `size` bytes, not in use (to be
        checked by its cookie before it is written)."""
        space = self.of.get(tid)
        if space is None:
            return None
        for area in space.areas:
            if area.user == 0 and area.size - COOKIE_SIZE >= size:
                return area
        return None

    def forget(self, tid: int, area: Area) -> None:
        space = self.of.get(tid)
        if space is not None and area in space.areas:
            space.areas.remove(area)

    def add_area(self, tid: int, area: Area) -> None:
        space = self.of.get(tid)
        if space is not None:
            space.areas.append(area)
