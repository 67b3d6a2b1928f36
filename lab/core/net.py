"""Hosts and addresses: one place that knows what a wildcard bind means for a client.

A server bound to a wildcard address (0.0.0.0, ::) is reached from this machine on
loopback: 127.0.0.1 for an IPv4 wildcard, [::1] for an IPv6 one (a dual-stack "::" bind
answers on both, but only [::1] is sure to). An IPv6 literal is bracketed in a URL.
"""

from __future__ import annotations

import ipaddress

#: Bind addresses that mean "every interface".
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "", "[::]", "*"})


def is_wildcard(host: str | None) -> bool:
    return (host or "") in WILDCARD_HOSTS


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and "localhost"."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def client_host(host: str | None) -> str:
    """The host a client on this machine uses to reach a server bound to `host`.

    >>> client_host("0.0.0.0"), client_host("::"), client_host("fe80::1")
    ('127.0.0.1', '[::1]', '[fe80::1]')
    """
    host = host or ""
    if host in ("0.0.0.0", "", "*"):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "[::1]"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def host_port(host: str | None, port: int) -> str:
    """`host:port` as a client (or a Prometheus scrape target) writes it."""
    return f"{client_host(host)}:{port}"


def base_url(host: str | None, port: int) -> str:
    """`http://host:port` of a server bound to `host`, for a client on this machine."""
    return f"http://{host_port(host, port)}"


def api_root(url: str) -> str:
    """`http://host:port` from a base URL given with or without a trailing `/v1`."""
    return url.rstrip("/").removesuffix("/v1")
