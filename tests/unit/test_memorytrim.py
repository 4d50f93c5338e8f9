"""Giving freed memory back: when the server trims its C heap, and how often."""

import platform

import pytest
from twisted.internet.task import Clock

from gemfcgi.memorytrim import TRIM_AFTER, MemoryReturner, libc_malloc_trim
from tests.fakes import Trims


def returner(clock=None):
    trims = Trims()
    return MemoryReturner(clock or Clock(), trims), trims


def test_a_start_trims_at_the_next_reactor_turn_once():
    memory, trims = returner()
    memory.now()
    memory.now()
    assert trims.count == 0
    memory.clock.advance(0)
    assert trims.count == 1
    memory.clock.advance(3600)
    assert trims.count == 1 and not memory.clock.getDelayedCalls()


def test_connections_ending_trim_once_a_few_seconds_after_the_first():
    memory, trims = returner()
    for _ in range(500):
        memory.soon()
    memory.clock.advance(TRIM_AFTER - 0.1)
    memory.soon()
    assert trims.count == 0
    memory.clock.advance(0.1)
    assert trims.count == 1
    # Under steady load: one trim per TRIM_AFTER, however many connections end.
    for _ in range(10):
        memory.soon()
        memory.clock.advance(TRIM_AFTER / 2)
        memory.soon()
        memory.clock.advance(TRIM_AFTER / 2)
    assert trims.count == 11
    # A server nobody talks to is not woken.
    memory.clock.advance(3600)
    assert trims.count == 11 and not memory.clock.getDelayedCalls()


def test_a_reload_brings_a_waiting_trim_forward_rather_than_adding_one():
    memory, trims = returner()
    memory.soon()
    memory.now()
    memory.clock.advance(0)
    assert trims.count == 1 and not memory.clock.getDelayedCalls()
    memory.now()
    memory.soon()  # a trim is on its way: no second one is planned
    memory.clock.advance(TRIM_AFTER)
    assert trims.count == 2


def test_a_stop_cancels_the_trim_on_its_way():
    memory, trims = returner()
    memory.soon()
    memory.stop()
    memory.clock.advance(TRIM_AFTER)
    assert trims.count == 0 and not memory.clock.getDelayedCalls()


def test_without_malloc_trim_nothing_is_scheduled():
    memory = MemoryReturner(Clock(), None)
    memory.now()
    memory.soon()
    assert not memory.clock.getDelayedCalls()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_glibc_s_malloc_trim_is_found_and_runs():
    trim = libc_malloc_trim()
    assert trim is not None
    assert trim() in (0, 1)
