"""Which addresses a customer's webhook may reach: public ones only (plain rules on `ipaddress`).

`services/webhooks/egress.py` resolves the host and connects; this says yes or no, and why,
for every form an internal address can take: loopback, private (RFC 1918, ULA), link-local (the
cloud's 169.254.169.254 metadata), CGNAT, multicast, reserved, unspecified, and the IPv6 forms
that carry one of those inside (IPv4-mapped, 6to4, Teredo, NAT64).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Names of cloud metadata services, refused whatever they resolve to.
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data",
                            "instance-data.ec2.internal", "metadata.azure.internal"})
#: RFC 6598 shared address space (carrier-grade NAT): not private to `ipaddress`, not public either.
CGNAT = ipaddress.ip_network("100.64.0.0/10")
#: RFC 6052 NAT64: the last 32 bits are an IPv4 address a NAT64 gateway would reach.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class EgressRefused(Exception):
    """The URL leads somewhere a webhook may not go; `reason` says where, for the customer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unresolved(EgressRefused):
    """The host resolves to no address (yet): nothing to connect to, and nothing internal either."""


def _carried(address: IPAddress) -> Iterator[IPAddress]:
    """Each IPv4 address an IPv6 form carries (mapped, 6to4, Teredo, NAT64); none for IPv4."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            yield address.ipv4_mapped
        if address.sixtofour is not None:
            yield address.sixtofour
        if address.teredo is not None:
            yield from address.teredo
        if address in NAT64:
            yield ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)


def _kind(address: IPAddress) -> str | None:
    """What makes `address` not public, in a customer's words; None for a public address."""
    checks: tuple[tuple[bool, str], ...] = (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address in CGNAT, "a shared (carrier-grade NAT) address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a public address"),
    )
    return next((words for refused, words in checks if refused), None)


def address_refusal(address: IPAddress) -> str | None:
    """What `address` is that a webhook may not go to (its IPv4 forms included), or None if it may."""
    # The IPv4 address inside first: it is where the packet goes, and says more than "reserved".
    for form in [*_carried(address), address]:
        kind = _kind(form)
        if kind is not None:
            return kind if form == address else f"an IPv6 form of {form}, {kind}"
    return None


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """WEBHOOK_ALLOWED_NETWORKS: CIDR blocks separated by commas; ValueError naming the bad one."""
    networks = []
    for part in (p.strip() for p in text.split(",")):
        if part:
            try:
                networks.append(ipaddress.ip_network(part, strict=True))
            except ValueError as error:
                raise ValueError(f"{part!r} is not a network in CIDR form ({error})") from None
    return tuple(networks)
