import pytest

from tests.quiet_clock import quiet_clock


@pytest.fixture
def mock_clock():
    # Real pty and socket I/O happen in these tests: the clock jumps only once no byte can still
    # be on its way (tests/quiet_clock.py), or after 50 ms of idle time while a socket is open.
    return quiet_clock()
