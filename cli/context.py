"""What every command reads from the app the CLI loaded: its settings, engine and bank client."""

from __future__ import annotations

from flask import current_app
from sqlalchemy import Engine

from bank.client import BankClient
from settings import Settings


def engine() -> Engine:
    return current_app.extensions["fx.engine"]


def settings() -> Settings:
    return current_app.extensions["fx.settings"]


def bank() -> BankClient:
    return current_app.extensions["fx.bank"]
