"""Outbound URL safety: refuse to send data to link-local, loopback or private addresses (SSRF).

A webhook URL comes from a config file that may not be fully trusted, so before connecting we resolve
the host, check every address it resolves to, and connect only to an address that passed the check
(so a DNS answer cannot change between the check and the connection). Redirects are followed by hand
and each hop is checked again. `allow_private=True` lets internal targets through (an internal chat
server, a test receiver on loopback) — except cloud metadata endpoints, which are always refused.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore

from evalkeeper.core.errors import EvalkeeperError
from evalkeeper.publish.redact import display_url

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud instance-metadata endpoints: never a legitimate destination for evaluation results.
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                            "instance-data.ec2.internal"})
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.169.123", "fd00:ec2::254", "100.100.100.200"))

REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


class OutboundURLRefused(EvalkeeperError):
    """The URL points at (or redirects to) an address we refuse to send data to."""


def _unwrap(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


def parse_networks(networks: Iterable[str]) -> list[Network]:
    """CIDR strings (`10.20.0.0/16`, `127.0.0.1/32`) to networks; a clear error for a bad one."""
    out: list[Network] = []
    for text in networks:
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise EvalkeeperError(f"not a network in CIDR form: {text!r}", hint="e.g. 10.20.0.0/16") from None
    return out


def refusal_reason(ip: IPAddress, allow_private: bool = False, allowed: Iterable[Network] = ()) -> str | None:
    """Why `ip` is not an acceptable destination, or None if it is.

    `allowed` networks are accepted even if private (a narrower alternative to `allow_private`).
    """
    ip = _unwrap(ip)
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata endpoint"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if allow_private or any(ip.version == net.version and ip in net for net in allowed):
        return None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private:
        return "a private-range address"
    if not ip.is_global:
        return "a reserved / non-global address"
    return None


def _resolve(host: str, port: int) -> list[IPAddress]:
    """All addresses `host` resolves to (module-level so tests can stand in a resolver)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OutboundURLRefused(f"cannot resolve host {host!r}: {exc.strerror}") from None
    addrs: list[IPAddress] = []
    for info in infos:
        addr = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if addr not in addrs:
            addrs.append(addr)
    return addrs


def vetted_addresses(host: str, port: int, allow_private: bool = False,
                     allowed: Iterable[Network] = ()) -> list[IPAddress]:
    """Resolve `host` and check every address; refuse if any one of them is not acceptable."""
    name = host.strip("[]").rstrip(".").lower()
    if name in METADATA_HOSTS:
        raise OutboundURLRefused(f"refusing to send to {name}: a cloud metadata host")
    try:
        addrs: list[IPAddress] = [ipaddress.ip_address(name)]
    except ValueError:
        addrs = _resolve(name, port)
    if not addrs:
        raise OutboundURLRefused(f"host {name!r} resolves to no address")
    for addr in addrs:
        reason = refusal_reason(addr, allow_private, allowed)
        if reason:
            hint = None if allow_private or "metadata" in reason else "set allow_private: true for an internal target"
            raise OutboundURLRefused(f"refusing to send to {name} ({addr}): {reason}", hint=hint)
    return addrs


def check_outbound_url(url: str, allow_private: bool = False,
                       allowed_networks: Iterable[str | Network] = ()) -> list[IPAddress]:
    """Check that `url` is http(s) and every address its host resolves to is acceptable; return them.

    `allowed_networks` (CIDRs) are let through even if private, without opening every private range.

    Raises `OutboundURLRefused` (the message never contains the URL's path, which may be a secret).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise OutboundURLRefused(f"only http and https URLs can be published to, not {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise OutboundURLRefused(f"URL has no host: {display_url(url)}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise OutboundURLRefused(f"URL has an invalid port: {display_url(url)}") from None
    allowed = [n if not isinstance(n, str) else parse_networks([n])[0] for n in allowed_networks]
    return vetted_addresses(parts.hostname, port, allow_private, allowed)


class _PinnedBackend(httpcore.SyncBackend):
    """Connects only to addresses that passed the check, resolved at connect time (no DNS rebinding)."""

    def __init__(self, allow_private: bool, allowed: list[Network]) -> None:
        self.allow_private = allow_private
        self.allowed = allowed

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        last: Exception | None = None
        for addr in vetted_addresses(host, port, self.allow_private, self.allowed):
            try:
                return super().connect_tcp(str(addr), port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:  # try the next address
                last = exc
        assert last is not None
        raise last


@dataclass
class SafeResponse:
    status: int
    body: bytes
    hops: int  # redirects followed


def post_json_safely(url: str, payload: Any, *, allow_private: bool = False,
                     allowed_networks: Iterable[str] = (), timeout: float = 10.0,
                     max_redirects: int = 5, headers: Mapping[str, str] | None = None) -> SafeResponse:
    """POST `payload` as JSON to `url`, following redirects by hand and re-checking every hop.

    Redirects re-send the POST (a webhook has no use for a GET). Network errors propagate as
    httpcore exceptions; refusals as `OutboundURLRefused`.
    """
    body = json.dumps(payload).encode("utf-8")
    hdrs = [(b"Content-Type", b"application/json"), (b"User-Agent", b"evalkeeper-publish")]
    hdrs += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    ext = {"timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}}
    allowed = parse_networks(allowed_networks)
    with httpcore.ConnectionPool(network_backend=_PinnedBackend(allow_private, allowed), retries=0) as pool:
        current = url
        for hop in range(max_redirects + 1):
            check_outbound_url(current, allow_private, allowed)
            resp = pool.request("POST", current, headers=hdrs, content=body, extensions=ext)
            if resp.status in REDIRECT_CODES:
                location = dict((k.lower(), v) for k, v in resp.headers).get(b"location")
                if not location:
                    return SafeResponse(resp.status, resp.content, hop)
                current = urljoin(current, location.decode("latin-1"))
                continue
            return SafeResponse(resp.status, resp.content, hop)
    raise OutboundURLRefused(f"more than {max_redirects} redirects from {display_url(url)}")
