from __future__ import annotations

import uuid

from flask.testing import FlaskClient


def exchange_body(account: uuid.UUID, amount: str = "100.00") -> dict[str, str]:
    return {"account": str(account), "from_currency": "CAD", "to_currency": "USD", "amount": amount}


def test_accepted_exchange_holds_the_amount_and_answers_with_its_status_url(
    client: FlaskClient, funded_account: uuid.UUID
) -> None:
    response = client.post("/api/exchanges", json=exchange_body(funded_account, "125.50"))
    assert response.status_code == 202
    body = response.get_json()
    assert body["amount"] == "125.50"
    status = client.get(body["status_url"])
    assert status.status_code == 200
    assert status.get_json()["state"] == "pending"
    balances = {b["currency"]: b for b in client.get(f"/api/accounts/{funded_account}").get_json()["balances"]}
    assert balances["CAD"] == {"currency": "CAD", "available": "874.50", "held": "125.50", "minor_unit": 2}
