"""The load generator of the benchmarks: exchanges POSTed through the JSON API from a pool of threads."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal

import requests

#: What every customer account starts with, and the currencies exchanges are drawn from.
FUNDING = {"CAD": "1000000", "USD": "1000000", "EUR": "1000000"}
TARGETS = ("USD", "CAD", "EUR", "GBP", "CHF", "AUD", "JPY")
#: Seconds (connect, read) of one POST; a timed-out POST is sent again with the same key.
POST_TIMEOUT_SECONDS = (2.0, 15.0)


@dataclass
class Submission:
    """One exchange the load generator asked for, and what became of the request."""

    index: int
    key: str
    body: dict[str, str]
    exchange_id: str | None = None
    status: int | None = None
    sent_at: float | None = None
    #: time.time() when the 202 arrived.
    accepted_at: float | None = None
    attempts: int = 0
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == 202 and self.exchange_id is not None


class LoadGenerator:
    """POSTs exchanges from a pool of threads, each with an Idempotency-Key.

    A POST that gets no answer, a connection error or a 5xx is sent again with the same
    key and body, which the API answers with the first exchange (never a second one).
    """

    def __init__(self, base_url: str | Sequence[str], accounts: Sequence[str], *, seed: int, threads: int,
                 run_id: str, api_keys: Mapping[str, str] | None = None, give_up_seconds: float = 180.0) -> None:
        #: One web host, or several: a POST goes to one by its index, and a retry to the next, as
        #: a load balancer takes a failed host out of the way.
        self.urls = [f"{url}/api/exchanges" for url in ([base_url] if isinstance(base_url, str) else base_url)]
        self.accounts = list(accounts)
        self.api_keys = dict(api_keys or {})
        self.seed = seed
        self.threads = threads
        self.run_id = run_id
        self.give_up_seconds = give_up_seconds
        self._local = threading.local()
        self.retried_posts = 0

    def request_for(self, index: int) -> tuple[str, dict[str, str]]:
        rng = random.Random(self.seed * 1_000_003 + index)
        source = rng.choice(tuple(FUNDING))
        target = rng.choice([c for c in TARGETS if c != source])
        amount = Decimal(rng.randint(100, 10_000)) / 100
        body = {"account": rng.choice(self.accounts), "from_currency": source, "to_currency": target,
                "amount": str(amount)}
        return f"{self.run_id}-{index}", body

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def submit(self, index: int) -> Submission:
        key, body = self.request_for(index)
        sub = Submission(index, key, body, sent_at=time.time())
        headers = {"Idempotency-Key": key}
        if body["account"] in self.api_keys:
            headers["Authorization"] = f"Bearer {self.api_keys[body['account']]}"
        deadline = time.monotonic() + self.give_up_seconds
        while True:
            sub.attempts += 1
            try:
                url = self.urls[(index + sub.attempts - 1) % len(self.urls)]
                response = self._session().post(url, json=body, headers=headers,
                                                timeout=POST_TIMEOUT_SECONDS)
                sub.status = response.status_code
                if response.status_code < 500:
                    if response.status_code == 202:
                        sub.accepted_at = time.time()
                        sub.exchange_id = response.json()["id"]
                    else:
                        sub.error = response.text[:300]
                    return sub
                sub.error = f"HTTP {response.status_code}: {response.text[:200]}"
            except requests.RequestException as error:
                sub.status, sub.error = None, f"{type(error).__name__}: {error}"[:300]
                self._local.session = None  # a fresh connection next time
            if time.monotonic() >= deadline:
                return sub
            self.retried_posts += 1
            time.sleep(min(2.0, 0.05 * 2 ** min(sub.attempts, 6)) * random.uniform(0.5, 1.0))

    def run(self, count: int, *, rate: float | None = None, start: int = 0) -> list[Submission]:
        """Submit `count` exchanges, flat out (the pool bounds concurrency) or at `rate` per second."""
        with ThreadPoolExecutor(self.threads, thread_name_prefix="load") as pool:
            began = time.monotonic()
            futures = []
            for n, index in enumerate(range(start, start + count)):
                if rate:
                    delay = began + n / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                futures.append(pool.submit(self.submit, index))
            return [f.result() for f in futures]
