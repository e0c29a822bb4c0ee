"""Local listeners over the socket layer: [[forward]], [[listen]] and the SOCKS5 server."""

from .proxy import Proxy, ProxyConfigError

__all__ = ["Proxy", "ProxyConfigError"]
