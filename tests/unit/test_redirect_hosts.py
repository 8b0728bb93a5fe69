"""A mainframe's ``--blob-host`` list: which redirects it follows (transport/hosts.py)."""

from __future__ import annotations

import pytest

from ashat.transport.hosts import HostList, HostListError


def test_a_host_passes_on_any_port_a_host_with_its_port_on_that_one() -> None:
    hosts = HostList.parse(
        ["Mirror.Example.com", "cdn.example.net:8443", "[2001:DB8::1]"],
        "https://omega.example:8700",
    )
    assert hosts.allows("https", "mirror.example.com", None)
    assert hosts.allows("http", "MIRROR.example.COM", 8080)
    assert hosts.allows("https", "cdn.example.net", 8443)
    assert not hosts.allows("https", "cdn.example.net", None)  # 443
    assert hosts.allows("https", "2001:db8::1", 9000)
    # OMEGA's own address: its port only
    assert hosts.allows("https", "omega.example", 8700)
    assert not hosts.allows("https", "omega.example", 443)
    # nothing else: the addresses a hostile OMEGA would pick
    for host in ("169.254.169.254", "localhost", "127.0.0.1", "mirror.example.com.evil.net"):
        assert not hosts.allows("http", host, None), host


def test_an_origin_without_a_port_is_its_schemes_default() -> None:
    hosts = HostList.parse([], "https://omega.example", "http://cache.site")
    assert hosts.allows("https", "omega.example", 443)
    assert hosts.allows("https", "omega.example", None)
    assert hosts.allows("http", "cache.site", 80) and not hosts.allows("http", "cache.site", 8080)


@pytest.mark.parametrize(
    "bad", ["", "http://mirror.example.com", "mirror.example.com/path", "a b", "host:0",
            "host:70000", "host:", "-host", "user@host", "[::1", "*.example.com"],
)  # fmt: skip
def test_what_is_not_a_host_is_refused_saying_what_is_expected(bad: str) -> None:
    with pytest.raises(HostListError, match="expected HOST or HOST:PORT"):
        HostList.parse([bad])
