"""One Prometheus sample read from /metrics, as an alert rule would read it."""

from __future__ import annotations

import re

from flask.testing import FlaskClient


def sample(client: FlaskClient, name: str, **labels: str) -> float | None:
    """The value of `name{labels}` (labels in the order served), or None when it is not served."""
    text = client.get("/metrics").get_data(as_text=True)
    selector = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    found = re.search(rf"^{re.escape(name + selector)} (\S+)$", text, re.MULTILINE)
    return None if found is None else float(found.group(1))


def metric(client: FlaskClient, name: str, **labels: str) -> float:
    """Like `sample`, and the sample must be served."""
    value = sample(client, name, **labels)
    assert value is not None, f"{name}{labels} not in /metrics"
    return value
