"""When a module's Cranelift code is worth compiling (runners/tiers.py): the rent-or-buy rule,
the usage records it reads, and the lock that keeps two compiles of one module apart."""

from __future__ import annotations

import marshal
import os
import subprocess
import sys

import pytest
from hypothesis import given, strategies as st

from wasmbinfmt.runners import tiers

records = st.tuples(st.integers(0, 10_000), st.floats(0, 1e5), st.floats(0, 100))
code_sizes = st.integers(0, 100 << 20)


def test_the_price_is_winchs_compile_scaled_else_the_code_size():
    assert tiers.price((3, 1.0, 0.5), 10 << 20) == 0.5 * tiers.CRANELIFT_COMPILE_FACTOR
    assert tiers.price((0, 0.0, 0.0), 4 << 20) == \
        (4 << 20) * tiers.CRANELIFT_SECONDS_PER_CODE_BYTE


@pytest.mark.parametrize("record,running,pays", [
    ((0, 0.0, 1.0), None, False),  # never run: nothing to go by
    ((0, 0.0, 1.0), 0.0, False),
    # One run predicts HORIZON more: it pays once a run loses 1/HORIZON of the price.
    ((1, 2 * 5.5 / tiers.HORIZON, 1.0), None, True),
    ((1, 2 * 5.5 / tiers.HORIZON * 0.99, 1.0), None, False),
    # A run under way counts with what it has spent so far.
    ((0, 0.0, 1.0), 2 * 5.5 / tiers.HORIZON, True),
    ((0, 0.0, 1.0), 2 * 5.5 / tiers.HORIZON * 0.99, False),
    # Past HORIZON runs, as many again: what they lost in all.
    ((100, 2 * 5.5, 1.0), None, True),
    ((100, 2 * 5.5 * 0.99, 1.0), None, False),
    # A test binary's milliseconds never pay for seconds of compile.
    ((3, 0.03, 1.0), None, False),
])
def test_cranelift_pays_when_the_expected_saving_reaches_its_price(record, running, pays):
    assert tiers.CRANELIFT_COMPILE_FACTOR == 5.5 and tiers.SAVED_SHARE == 0.5
    assert tiers.cranelift_pays(record, 0, running) is pays


@given(records, code_sizes)
def test_the_live_threshold_is_where_it_starts_to_pay(record, code):
    threshold = tiers.running_seconds_until_it_pays(record, code)
    assert tiers.cranelift_pays(record, code, threshold * (1 + 1e-9) + 1e-12)
    if threshold > 1e-6:
        assert not tiers.cranelift_pays(record, code, threshold * (1 - 1e-6))


@given(records, code_sizes)
def test_what_is_due_before_a_run_also_pays(record, code):
    if tiers.compile_before_run(record, code) and record[0] > 0:
        assert tiers.cranelift_pays(record, code)


def test_due_when_the_time_lost_reaches_the_price():
    assert tiers.compile_before_run((7, 2 * 5.5, 1.0), 0)
    assert not tiers.compile_before_run((7, 2 * 5.5 * 0.99, 1.0), 0)


def test_a_record_counts_runs_and_keeps_winchs_compile(tmp_path):
    modules = str(tmp_path)
    assert tiers.load(modules, "m") == tiers.NEW_RECORD
    tiers.set_winch_compile(modules, "m", 0.25)
    tiers.add_run(modules, "m", 1.5)
    tiers.add_run(modules, "m", 0.5)
    assert tiers.load(modules, "m") == (2, 2.0, 0.25)
    assert tiers.load(modules, "other") == tiers.NEW_RECORD


@pytest.mark.parametrize("content", [b"", b"junk", marshal.dumps(("m", (1, 2.0))),
                                     marshal.dumps(("another", (1, 2.0, 0.5)))])
def test_a_damaged_or_foreign_record_is_a_new_one(tmp_path, content):
    (tmp_path / "m.usage").write_bytes(content)
    os.chmod(tmp_path / "m.usage", 0o600)
    assert tiers.load(str(tmp_path), "m") == tiers.NEW_RECORD


def test_a_compile_under_way_elsewhere_is_seen_and_waited_for(tmp_path):
    modules = str(tmp_path)
    assert not tiers.being_compiled(modules, "m")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from wasmbinfmt.runners import tiers\n"
         f"with tiers.compile_lock({modules!r}, 'm'):\n"
         "    print('held', flush=True); sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"held\n"
        assert tiers.being_compiled(modules, "m")
        assert not tiers.being_compiled(modules, "another")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert not tiers.being_compiled(modules, "m")
    assert not os.path.exists(tmp_path / "m.compiling")  # the lock leaves nothing behind
    with tiers.compile_lock(modules, "m"):
        assert (tmp_path / "m.compiling").exists()
