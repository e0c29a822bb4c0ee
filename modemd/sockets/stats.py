"""Counters of the socket layer, kept as plain attributes for the metrics exporter to read."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class SocketStats:
    opened: int = 0                      # QIOPEN succeeded (clients and listeners)
    accepted: int = 0                    # incoming connections on module-side listeners
    closed: int = 0                      # QICLOSE answered
    open_failed: Counter[str] = field(default_factory=Counter)  # by canonical reason
    lost: Counter[str] = field(default_factory=Counter)         # abnormal ends, by reason
    send_fail: int = 0                   # SEND FAIL answers (back-pressure, retried)
    send_retries_error: int = 0          # QISEND ERROR answers retried
    reconcile_polls: int = 0             # slow polls for data a lost recv URC would have hidden
    reconcile_recoveries: int = 0        # ... that found data
    id_collisions: int = 0               # 563 socket_id_used on open
    open_timeouts: int = 0               # no +QIOPEN URC in time
    ack_timeouts: int = 0                # flowchart ACK rule closed a socket
    incoming_full: int = 0               # +QIURC: "incoming full"
    incoming_rejected: int = 0           # incoming connection with no listener to take it
    orphan_urcs: int = 0                 # URC for a connect_id nobody owns
    stale_closed: int = 0                # IDs closed by reset_stale()
    qiclose_failures: int = 0            # QICLOSE timed out (ID quarantined)
    bytes_sent: int = 0                  # to the module (SEND OK)
    bytes_received: int = 0              # from the module (QIRD and direct push)
    bytes_pushed: int = 0                # ... of which came as direct push
    mode_switches: int = 0               # AT+QISWTMD push <-> buffer (a lagging local reader)
    commands_lost: int = 0               # CommandLost on a socket command (the module answered
    #                                      the channel's probe): retried, settled or reset
    sends_uncertain: int = 0             # QISENDs whose outcome was unknown (lost, ERROR, garbled)
    sends_settled_taken: int = 0         # ... the module had them (AT+QISEND=id,0): not resent
    sends_resent: int = 0                # ... the module did not have them: sent again
    reads_retried: int = 0               # lost QIRD answers the totals showed unconsumed: re-read
