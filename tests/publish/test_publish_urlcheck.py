"""Outbound URL checks: link-local, metadata, loopback and private targets are refused unless allowed."""

from __future__ import annotations

import ipaddress

import pytest

from evalkeeper.publish import urlcheck
from evalkeeper.publish.urlcheck import OutboundURLRefused, check_outbound_url, refusal_reason


@pytest.mark.parametrize("url,reason", [
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://169.254.10.1/hook", "link-local"),
    ("http://10.1.2.3/hook", "private"),
    ("http://172.16.0.9/hook", "private"),
    ("http://192.168.1.1/hook", "private"),
    ("http://127.0.0.1:8080/hook", "loopback"),
    ("http://127.8.9.10/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://[fe80::1]/hook", "link-local"),
    ("http://[::ffff:10.0.0.1]/hook", "private"),
    ("http://0.0.0.0/hook", "unspecified"),
    ("http://100.64.1.1/hook", "non-global"),
    ("http://2130706433/hook", "loopback"),  # 127.0.0.1 written as one integer
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
])
def test_refused_without_allow_private(url: str, reason: str) -> None:
    with pytest.raises(OutboundURLRefused) as info:
        check_outbound_url(url)
    assert reason in str(info.value)
    assert "/hook" not in str(info.value) and "meta-data" not in str(info.value)  # path never echoed


def test_allow_private_lets_internal_targets_through_but_never_metadata() -> None:
    assert check_outbound_url("http://127.0.0.1:9/x", allow_private=True) == [ipaddress.ip_address("127.0.0.1")]
    assert check_outbound_url("http://10.0.0.5/x", allow_private=True)
    with pytest.raises(OutboundURLRefused, match="metadata"):
        check_outbound_url("http://169.254.169.254/", allow_private=True)
    with pytest.raises(OutboundURLRefused, match="metadata"):
        check_outbound_url("http://[fd00:ec2::254]/", allow_private=True)


def test_public_address_is_accepted_and_scheme_checked() -> None:
    assert refusal_reason(ipaddress.ip_address("8.8.8.8")) is None
    assert refusal_reason(ipaddress.ip_address("2606:4700::1111")) is None
    with pytest.raises(OutboundURLRefused, match="http and https"):
        check_outbound_url("file:///etc/passwd")
    with pytest.raises(OutboundURLRefused, match="http and https"):
        check_outbound_url("gopher://example.com/")


def test_every_resolved_address_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name resolving to one public and one private address is refused (DNS answers can mix them)."""
    answers = {"mixed.example": ["93.184.216.34", "10.0.0.7"], "public.example": ["93.184.216.34"]}
    monkeypatch.setattr(urlcheck, "_resolve",
                        lambda host, port: [ipaddress.ip_address(a) for a in answers[host]])
    assert check_outbound_url("https://public.example/hook") == [ipaddress.ip_address("93.184.216.34")]
    with pytest.raises(OutboundURLRefused, match="10.0.0.7"):
        check_outbound_url("https://mixed.example/hook")


def test_connection_uses_a_vetted_address_resolved_at_connect_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the name is public when checked, loopback when connecting -> refused at connect time."""
    answers = [["93.184.216.34"], ["127.0.0.1"]]
    seen: list[str] = []

    def rebinding(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        seen.append(host)
        return [ipaddress.ip_address(a) for a in (answers.pop(0) if answers else ["127.0.0.1"])]

    monkeypatch.setattr(urlcheck, "_resolve", rebinding)
    with pytest.raises(OutboundURLRefused, match="loopback"):
        urlcheck.post_json_safely("http://rebind.example:8/hook", {"text": "x"}, timeout=2)
    assert seen == ["rebind.example", "rebind.example"]  # checked, then resolved again by the connection itself
