"""Why a module socket could not be opened or stopped working, as values the proxy can map.

Every error carries a canonical `reason` name (the profile's error_name() of a module result code, or
one of the layer's own names below) so the SOCKS5 reply code and the metrics label come from one place.
"""

from __future__ import annotations

# The socket layer's own reasons (not module result codes).
NOT_SERVING = "not_serving"        # the PDP context is down or the module is not ready
OPEN_TIMEOUT = "open_timeout"      # no +QIOPEN URC within profile.open_timeout()
QUEUE_FULL = "queue_full"          # every connect_id busy and proxy.queue_limit waiters queued
QUEUE_TIMEOUT = "queue_timeout"    # waited proxy.queue_timeout for a connect_id
COMMAND_TIMEOUT = "command_timeout"  # an AT command passed its deadline (AtTimeout)
CHANNEL_CLOSED = "channel_closed"  # the AT channel stopped (port gone, module session ended)
CONTEXT_LOST = "context_lost"      # link.lost(ctx) fired: PDP deactivated or module reset
ACK_TIMEOUT = "ack_timeout"        # flowchart ACK rule: unacked bytes made no progress for 2 min
COMMAND_ERROR = "command_error"    # QISEND/QIRD answered ERROR on a connected socket
INVALID_HOST = "invalid_host"      # the host name failed modemd.validate.check_hostname
REMOTE_CLOSED = "remote_closed"    # the remote closed while data was still being sent to it
COMMAND_LOST = "command_lost"      # a command was lost on the line and could not be settled
UPLOAD_UNCERTAIN = "upload_uncertain"  # an uncertain QISEND the module's totals cannot settle
DOWNLOAD_CORRUPT = "download_corrupt"  # a broken push / QIRD frame, or totals that disagree

# QIOPEN failures and the flowchart's "5 consecutive failed opens -> QIDEACT + QIACT" (§1.1). The
# module's result codes differ per family; profile.error_name() maps them to these canonical names
# (seeds-comparison §5.1), so the classification is family-independent.
#: implicate the context or the module: they count whatever the remote
CONTEXT_OPEN_FAILURES = frozenset({
    "unknown_error", "operation_blocked", "memory_not_enough", "create_socket_failed",
    "pdp_activate_failed", "pdp_broken", "apn_not_configured", "operation_busy",
    OPEN_TIMEOUT, COMMAND_TIMEOUT, COMMAND_ERROR,  # no +QIOPEN in 150 s; a bare ERROR to QIOPEN
})
#: may be one remote's fault (a wrong name, a closed port, a black hole): they count only while
#: the failures in a row reached more than one remote, so one dead remote cycles nobody's context
REMOTE_OPEN_FAILURES = frozenset({
    "dns_failed", "dns_busy", "socket_connect_failed", "operation_timeout", "socket_closed",
})


class SocketError(Exception):
    """Base: `reason` is a canonical name, `code` the module's result code when there is one."""

    def __init__(self, reason: str, detail: str = "", code: int | None = None) -> None:
        self.reason = reason
        self.code = code
        self.detail = detail or reason
        super().__init__(self.detail)


class OpenError(SocketError):
    """QIOPEN failed: refuse the local client at once, with this reason in the log."""


class ConnectionLost(SocketError):
    """An open module socket died abnormally: the local client must get a RESET, not an EOF."""


class RemoteClosed(SocketError):
    """The remote end closed: data written now has nowhere to go (not an abnormal end)."""

    def __init__(self, detail: str = "remote closed") -> None:
        super().__init__(REMOTE_CLOSED, detail)
