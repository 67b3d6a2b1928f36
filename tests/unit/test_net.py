"""lab.core.net: what a wildcard bind means for a client on this machine (the one home)."""

from __future__ import annotations

import pytest

from lab.core import net


@pytest.mark.parametrize("host, client", [
    ("0.0.0.0", "127.0.0.1"), ("", "127.0.0.1"), ("*", "127.0.0.1"), (None, "127.0.0.1"),
    ("::", "[::1]"), ("[::]", "[::1]"),
    ("127.0.0.1", "127.0.0.1"), ("localhost", "localhost"), ("10.0.0.7", "10.0.0.7"),
    ("fe80::1", "[fe80::1]"), ("[fe80::1]", "[fe80::1]"),
])
def test_client_host(host, client):
    assert net.client_host(host) == client


def test_urls_and_scrape_targets():
    assert net.base_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert net.base_url("::", 8001) == "http://[::1]:8001"
    assert net.host_port("0.0.0.0", 8000) == "127.0.0.1:8000"


@pytest.mark.parametrize("url", ["http://h:8000", "http://h:8000/", "http://h:8000/v1",
                                 "http://h:8000/v1/"])
def test_api_root_takes_a_base_with_or_without_v1(url):
    assert net.api_root(url) == "http://h:8000"


def test_wildcard_and_loopback():
    assert all(net.is_wildcard(h) for h in ("0.0.0.0", "::", "", "[::]", "*", None))
    assert not net.is_wildcard("127.0.0.1")
    assert all(net.is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"))
    assert not any(net.is_loopback(h) for h in ("0.0.0.0", "10.0.0.7", "example.org", "::"))
