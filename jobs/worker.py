"""Entry point of `dramatiq jobs.worker`: the broker from the environment, then the actors."""

from __future__ import annotations

from jobs.broker import build_broker, install
from settings import Settings

settings = Settings.from_env()
broker = install(build_broker(settings))

import jobs.actors  # noqa: E402,F401  (actors bind to the broker installed above)
