"""modemd: a Quectel module's TCP/IP stack as ordinary local sockets."""

__version__ = "0.1.0"
