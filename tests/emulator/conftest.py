import pytest
import trio.testing


@pytest.fixture
def mock_clock():
    # Real pty and socket I/O happen in these tests: a zero threshold would jump virtual time
    # while a task merely waits for the kernel, so give real I/O 50 ms first.
    return trio.testing.MockClock(autojump_threshold=0.05)
