"""spaces.py: who shares memory, and where a rewrite may write (pure)."""

from __future__ import annotations

from wasmbinfmt.trace.spaces import AREA_MINIMUM, COOKIE_SIZE, Area, Spaces, area_size

MAIN_STACK = (0x7000, 0x9000, True)


def never(a, b):
    return False


def always(a, b):
    return True


def test_the_root_alone_writes_below_its_stack_pointer():
    spaces = Spaces(1)
    assert spaces.sharers(1, always) == []
    assert spaces.below_stack_allowed(1, [], 0x8000, MAIN_STACK)


def test_only_the_main_stack_is_a_tracees_own():
    spaces = Spaces(1)
    assert not spaces.below_stack_allowed(1, [], 0x8000, (0x7000, 0x9000, False))
    assert not spaces.below_stack_allowed(1, [], 0x8000, None)


def test_a_fork_child_has_its_own_space():
    spaces = Spaces(1)
    spaces.cloned(1, 2, shares_memory=False)
    assert spaces.sharers(2, always) == [] and spaces.sharers(1, always) == []


def test_clone_vm_children_and_their_parent_share_until_kcmp_says_otherwise():
    spaces = Spaces(1)
    spaces.cloned(1, 2, shares_memory=True)
    spaces.cloned(2, 3, shares_memory=True)  # a thread of the child: the same space
    assert sorted(spaces.sharers(3, always)) == [1, 2]
    assert spaces.sharers(3, never) == []  # both exec'd since, unseen by the tracer
    assert not spaces.below_stack_allowed(3, [1, 2], 0x8000, MAIN_STACK)


def test_a_vfork_child_below_its_only_sharers_stack_pointer_may_write_there():
    spaces = Spaces(1)
    spaces.cloned(1, 2, shares_memory=True, vfork_stack=0x8800)
    assert spaces.below_stack_allowed(2, [1], 0x8000, MAIN_STACK)
    # above the parent's stack pointer (musl's posix_spawn: an array in the parent's frame)
    assert not spaces.below_stack_allowed(2, [1], 0x8900, MAIN_STACK)
    # the parent's stack pointer in another mapping
    assert not spaces.below_stack_allowed(2, [1], 0x8000, (0x7000, 0x8700, True))
    # another sharer besides the parent (a thread of it)
    spaces.cloned(1, 3, shares_memory=True)
    assert not spaces.below_stack_allowed(2, [1, 3], 0x8000, MAIN_STACK)


def test_a_tracee_without_its_clone_event_may_share_with_anyone():
    spaces = Spaces(1)
    spaces.unknown(5)
    assert spaces.sharers(5, never) != []
    spaces.cloned(1, 5, shares_memory=False)  # the event, late
    assert spaces.sharers(5, never) == []


def test_leaving_a_space_frees_its_areas_for_the_others():
    spaces = Spaces(1)
    spaces.cloned(1, 2, shares_memory=True)
    area = Area(0x1000, 0x4000)
    spaces.add_area(2, area)
    area.user = 2
    assert spaces.free_area(1, 100) is None
    spaces.exec_succeeded(2)
    assert area.user == 0 and spaces.free_area(1, 100) is area
    assert spaces.free_area(2, 100) is None  # its new program has new memory
    assert spaces.sharers(1, always) == []


def test_an_area_serves_only_what_fits_after_its_cookie():
    spaces = Spaces(1)
    area = Area(0x1000, 0x4000)
    spaces.add_area(1, area)
    assert spaces.free_area(1, 0x4000 - COOKIE_SIZE) is area
    assert spaces.free_area(1, 0x4000 - COOKIE_SIZE + 1) is None
    spaces.forget(1, area)
    assert spaces.free_area(1, 1) is None
    assert Area(0, 1).cookie != Area(0, 1).cookie


def test_area_sizes_are_whole_pages_of_at_least_the_minimum():
    assert area_size(10, 4096) == AREA_MINIMUM
    assert area_size(AREA_MINIMUM, 4096) == AREA_MINIMUM + 4096
    assert area_size(100000, 65536) == 131072
