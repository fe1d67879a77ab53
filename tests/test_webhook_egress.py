"""A customer's webhook URL cannot reach the house: internal addresses refused at registration
and at every delivery, and each delivery connects to the address it checked.

The rule (domain/egress.py) is tested on every form an internal address takes; registration
through the API, as a customer would try it; delivery with a real HTTP receiver on 127.0.0.1
and a resolver of the test's own, which plays a DNS name that moves between check and call.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, func, select

from domain.egress import EgressRefused, address_refusal, parse_networks
from errors import ConfigError
from harness.wsgi import serving
from models import webhook_attempts, webhook_endpoints
from services.accounts import open_account
from services.webhooks.delivery import webhook_session
from services.webhooks.egress import EgressPolicy, IPAddress
from services.webhooks.endpoints import create_endpoint
from services.workflow import Workflow
from settings import Settings
from tests.conftest import ApiCustomer
from tests.ops_support import exchange_in
from tests.webhook_support import FAST, run_deliveries

#: Every internal form a customer tried this week, and more: (address, what it is).
INTERNAL = [
    ("127.0.0.1", "a loopback address"), ("127.255.0.9", "a loopback address"), ("::1", "a loopback address"),
    ("10.0.0.1", "a private address"), ("172.16.5.4", "a private address"), ("192.168.1.1", "a private address"),
    ("fc00::1", "a private address"), ("fd12:3456::1", "a private address"),
    ("169.254.169.254", "a link-local address"), ("fe80::1", "a link-local address"),
    ("100.64.0.1", "a shared (carrier-grade NAT) address"), ("100.127.255.254", "a shared (carrier-grade NAT) address"),
    ("0.0.0.0", "an unspecified address"), ("::", "an unspecified address"),
    ("224.0.0.1", "a multicast address"), ("ff02::1", "a multicast address"),
    ("240.0.0.1", "a reserved address"), ("255.255.255.255", "a reserved address"),
    ("192.0.2.10", "a private address"), ("198.18.0.1", "a private address"),
    ("::ffff:127.0.0.1", "an IPv6 form of 127.0.0.1, a loopback address"),
    ("::ffff:169.254.169.254", "an IPv6 form of 169.254.169.254, a link-local address"),
    ("2002:7f00:1::1", "an IPv6 form of 127.0.0.1, a loopback address"),  # 6to4
    ("2002:a00:1::1", "an IPv6 form of 10.0.0.1, a private address"),
    ("64:ff9b::a9fe:a9fe", "an IPv6 form of 169.254.169.254, a link-local address"),  # NAT64
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e"]

#: The URL forms of this week's attempts, each as a customer would register it.
INTERNAL_URLS = [
    "http://127.0.0.1:8100/_faults/reset", "http://0x7f000001/", "http://2130706433/", "http://127.1/",
    "http://[::1]/", "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://localhost/",
    "http://0/", "http://[::ffff:127.0.0.1]/", "https://metadata.google.internal/computeMetadata/v1/",
    "http://0177.0.0.1/", "http://LOCALHOST.:5432/",
]


@pytest.mark.parametrize(("address", "kind"), INTERNAL, ids=[a for a, _ in INTERNAL])
def test_every_internal_form_of_an_address_is_refused_with_what_it_is(address: str, kind: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", PUBLIC)
def test_a_public_address_is_allowed(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_allowed_networks_are_cidr_blocks_and_a_bad_one_is_named() -> None:
    assert parse_networks(" 10.1.0.0/16, fd00::/8 ,") == (ipaddress.ip_network("10.1.0.0/16"),
                                                          ipaddress.ip_network("fd00::/8"))
    assert parse_networks("") == ()
    for bad in ("nonsense", "10.0.0.1/8", "10.0.0.0/33"):
        with pytest.raises(ValueError, match=repr(bad)):
            parse_networks(f"192.168.0.0/16,{bad}")


def test_a_bad_allowed_network_refuses_to_start_in_one_line() -> None:
    with pytest.raises(ConfigError, match="WEBHOOK_ALLOWED_NETWORKS: 'everything' is not a network"):
        Settings.from_env({"WEBHOOK_ALLOWED_NETWORKS": "everything"})
    assert Settings.from_env({"WEBHOOK_ALLOWED_NETWORKS": "10.8.0.0/16"}).webhook_networks == (
        ipaddress.ip_network("10.8.0.0/16"),)


def test_a_name_is_refused_if_any_of_its_addresses_is_internal() -> None:
    policy = EgressPolicy(resolver=lambda host, port: [ipaddress.ip_address("93.184.216.34"),
                                                       ipaddress.ip_address("10.0.0.7")])
    with pytest.raises(EgressRefused, match=re.escape("hooks.example resolves to 10.0.0.7, a private address")):
        policy.addresses("hooks.example", 443)


def test_an_allowed_network_lets_its_addresses_through_and_no_other() -> None:
    policy = EgressPolicy(parse_networks("10.8.0.0/16"))
    assert policy.addresses("10.8.3.4", 80) == [ipaddress.ip_address("10.8.3.4")]
    with pytest.raises(EgressRefused, match=re.escape("10.9.0.1 is a private address")):
        policy.addresses("10.9.0.1", 80)


@pytest.mark.parametrize("url", INTERNAL_URLS)
def test_registering_an_internal_url_is_a_422_naming_the_url_and_writes_nothing(
        client: FlaskClient, engine: Engine, url: str) -> None:
    response = client.post("/api/webhook-endpoints", json={"url": url})
    assert response.status_code == 422, response.get_json()
    message = response.get_json()["error"]["fields"]["url"][0]
    assert message.startswith("Must lead to a public address: "), message
    assert "metadata" in message or " is " in message or "resolves to" in message, message
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(webhook_endpoints)).scalar_one() == 0


@pytest.mark.parametrize("url", ["http://hooks.example/\x00", "http://hooks.exa\x00mple/", "http://hooks.example/a\nb",
                                 "http://hooks.example/\x7f", "http://hooks.example/\x1b[31m"])
def test_a_url_with_a_control_character_is_a_422_naming_the_url_and_writes_nothing(
        client: FlaskClient, engine: Engine, url: str) -> None:
    response = client.post("/api/webhook-endpoints", json={"url": url})
    assert response.status_code == 422, response.get_json()
    assert "without control characters" in response.get_json()["error"]["fields"]["url"][0]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(webhook_endpoints)).scalar_one() == 0


class MovingName:
    """A resolver for one DNS name that answers `first` until told to move, then `then`; counts lookups."""

    def __init__(self, first: str, then: str) -> None:
        self.answer, self.then, self.lookups = ipaddress.ip_address(first), ipaddress.ip_address(then), 0

    def move(self) -> None:
        self.answer = self.then

    def __call__(self, host: str, port: int) -> list[IPAddress]:
        assert host == NAME
        self.lookups += 1
        return [self.answer]


NAME = "hooks.customer.example"


@pytest.fixture
def receiver_url() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP receiver on 127.0.0.1 that keeps the path of every call it gets."""
    calls: list[str] = []

    def app(environ: dict, start_response: object) -> list[bytes]:
        calls.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
        return [b"ok"]

    with serving(app, name="egress-receiver") as url:
        yield url, calls


@pytest.fixture
def account(engine: Engine, customer: ApiCustomer) -> uuid.UUID:
    return open_account(engine, "Hooked Customer", {"CAD": Decimal("5000.00")}, customer_id=customer.id)


def test_a_name_that_moves_to_127_0_0_1_after_registration_is_refused_at_delivery_and_recorded(
        app: Flask, engine: Engine, wf: Workflow, customer: ApiCustomer, account: uuid.UUID,
        receiver_url: tuple[str, list[str]]) -> None:
    url, calls = receiver_url
    port = url.rsplit(":", 1)[1]
    name = MovingName("93.184.216.34", "127.0.0.1")
    policy = EgressPolicy(resolver=name)
    create_endpoint(engine, customer.id, f"http://{NAME}:{port}/hooks", egress=policy)  # public, then
    name.move()
    exchange_in(wf, account, "completed")
    assert run_deliveries(engine, FAST, webhook_session(policy)) == ["retrying"]
    assert calls == []  # nothing reached the receiver on 127.0.0.1
    with engine.connect() as conn:
        attempt = conn.execute(select(webhook_attempts)).one()
    assert attempt.status_code is None
    assert attempt.response_snippet == f"refused: {NAME} resolves to 127.0.0.1, a loopback address"


def test_a_delivery_connects_to_the_address_it_checked_without_a_second_lookup(
        engine: Engine, wf: Workflow, customer: ApiCustomer, account: uuid.UUID,
        receiver_url: tuple[str, list[str]]) -> None:
    """The name exists only in the test's resolver: had the HTTP client looked it up again itself,
    the system's DNS would have failed it. Reaching the receiver proves the checked address was used."""
    url, calls = receiver_url
    port = url.rsplit(":", 1)[1]
    name = MovingName("127.0.0.1", "127.0.0.1")
    policy = EgressPolicy(parse_networks("127.0.0.0/8"), resolver=name)
    create_endpoint(engine, customer.id, f"http://{NAME}:{port}/hooks", egress=policy)
    before = name.lookups
    exchange_in(wf, account, "completed")
    assert run_deliveries(engine, FAST, webhook_session(policy)) == ["delivered"]
    assert calls == ["/hooks"]
    assert name.lookups == before + 1  # one lookup for the attempt, and the connection used its answer


def test_the_delivery_client_ignores_proxies_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://10.0.0.1:3128")
    monkeypatch.setenv("HTTPS_PROXY", "http://10.0.0.1:3128")
    session = webhook_session(EgressPolicy())
    assert session.trust_env is False
    assert session.proxies == {}
