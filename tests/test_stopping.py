"""Stop signals end a job at a safe point: inside ``stopping.deferred`` (native code calling back
into Python) a first SIGTERM only winds work down and is raised when the block ends; a second one,
or one outside such a block, is raised at once."""

from __future__ import annotations

import os
import signal

import pytest

from autotune.common import stopping
from autotune.errors import Interrupted


@pytest.fixture
def handlers():
    previous = stopping.install()
    yield
    stopping.restore(previous)


def _terminate_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def test_a_stop_inside_a_deferred_block_is_raised_when_the_block_ends(handlers):
    reached_the_end = False
    with pytest.raises(Interrupted, match="terminated by SIGTERM"):
        with stopping.deferred():
            _terminate_self()
            assert stopping.requested()
            reached_the_end = True
    assert reached_the_end and stopping.exit_code() == 143


def test_a_second_stop_inside_a_deferred_block_is_raised_at_once(handlers):
    after_second = False
    with pytest.raises(Interrupted):
        with stopping.deferred():
            _terminate_self()
            _terminate_self()
            after_second = True
    assert not after_second


def test_a_stop_outside_a_deferred_block_is_raised_where_it_arrives(handlers):
    with pytest.raises(Interrupted):
        _terminate_self()
        pytest.fail("the stop should have been raised by the signal handler")


def test_ctrl_c_is_a_keyboard_interrupt_with_its_exit_code(handlers):
    with pytest.raises(KeyboardInterrupt):
        with stopping.deferred():
            os.kill(os.getpid(), signal.SIGINT)
    assert stopping.exit_code() == 130
