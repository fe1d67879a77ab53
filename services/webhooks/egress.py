"""Where a customer's webhook URL may lead: to public addresses only.

A customer names the URL, so the URL is hostile until checked: `http://127.1/`, `http://0x7f000001/`,
`http://[::ffff:10.0.0.1]/` or a name that resolves to 169.254.169.254 would otherwise make our
worker call our own services, or the cloud's metadata, and show the customer the answer. The
host is resolved and every address it resolves to must be public; the check runs when the
endpoint is registered and again at every delivery, and the delivery connects to an address that
was just checked (`GuardedAdapter`), so a name cannot switch to 127.0.0.1 between check and
connect. Redirects are never followed (services/webhooks/delivery.py).

Our own module on `ipaddress` rather than a library: the maintained candidates wrap a whole HTTP
client (advocate pins requests 2.x internals and is unmaintained since 2021), while the rule
itself is a few lines of `ipaddress` plus the embedded-IPv4 forms, and is tested here in full.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from domain.egress import METADATA_HOSTS, EgressRefused, IPAddress, IPNetwork, Unresolved, address_refusal


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (IP literals in any form inet_aton takes: 127.1, 0x7f000001)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in found))


@dataclass(frozen=True)
class EgressPolicy:
    """Public addresses, plus the networks a private deployment (or a test) allows by name."""

    allowed_networks: Sequence[IPNetwork] = ()
    resolver: Callable[[str, int], list[IPAddress]] = field(default=resolve, compare=False)

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses a webhook to `host` may connect to: all of them, or EgressRefused."""
        name = host.strip("[]").rstrip(".").lower()
        if name in METADATA_HOSTS:
            raise EgressRefused(f"{host} is a cloud metadata service")
        try:
            found = self.resolver(name, port)
        except (OSError, UnicodeError, ValueError):
            raise Unresolved(f"{host} does not resolve to an address") from None
        if not found:
            raise Unresolved(f"{host} does not resolve to an address")
        for address in found:  # every one: the connection may use any of them
            if any(address in network for network in self.allowed_networks):
                continue
            refusal = address_refusal(address)
            if refusal is not None:
                literal = name == str(address)
                raise EgressRefused(f"{host} is {refusal}" if literal else f"{host} resolves to {address}, {refusal}")
        return found


class _GuardedConnectionMixin:
    """urllib3's connection, resolving through the policy and connecting to a checked address."""

    policy: EgressPolicy
    _dns_host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any

    def _new_conn(self) -> socket.socket:
        addresses = self.policy.addresses(self._dns_host, self.port)  # EgressRefused goes up as it is
        last: OSError | None = None
        for address in addresses:
            try:
                sock = socket.create_connection((str(address), self.port), self.timeout,  # type: ignore[arg-type]
                                                source_address=self.source_address)
            except TimeoutError as error:
                raise ConnectTimeoutError(self, f"connection to {self._dns_host} timed out") from error
            except OSError as error:
                last = error
                continue
            for option in self.socket_options or ():
                sock.setsockopt(*option)
            return sock
        raise NewConnectionError(self, f"could not connect to {self._dns_host}: {last}")  # type: ignore[arg-type]


def _pool_classes(policy: EgressPolicy) -> dict[str, type[HTTPConnectionPool]]:
    http = type("GuardedHTTPConnection", (_GuardedConnectionMixin, HTTPConnection), {"policy": policy})
    https = type("GuardedHTTPSConnection", (_GuardedConnectionMixin, HTTPSConnection), {"policy": policy})
    return {"http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https})}


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose every connection goes through `policy` (mount it for http and https)."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self.policy)
