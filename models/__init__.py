"""The schema: typed SQLAlchemy 2 models. Core statements use `Model.__table__`."""

from models.account import Account, AccountKind, AccountStatus, Balance
from models.base import Base
from models.customer import ApiKey, Customer
from models.exchange import Exchange, ExchangeEvent, ExchangeStateCount, ExchangeStateDelta
from models.ledger import LedgerEntry
from models.operations import OperatorAction, OpsCheck, ProcessHeartbeat
from models.outbox import OutboxMessage, RelayLease
from models.quote import Quote
from models.reconciliation import BankStatementLine, ReconciliationFinding
from models.webhook import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent

accounts = Account.__table__
api_keys = ApiKey.__table__
customers = Customer.__table__
balances = Balance.__table__
exchanges = Exchange.__table__
exchange_events = ExchangeEvent.__table__
exchange_state_counts = ExchangeStateCount.__table__
exchange_state_deltas = ExchangeStateDelta.__table__
ledger_entries = LedgerEntry.__table__
outbox_messages = OutboxMessage.__table__
relay_leases = RelayLease.__table__
quotes = Quote.__table__
reconciliation_findings = ReconciliationFinding.__table__
bank_statement_lines = BankStatementLine.__table__
process_heartbeats = ProcessHeartbeat.__table__
ops_checks = OpsCheck.__table__
operator_actions = OperatorAction.__table__
webhook_endpoints = WebhookEndpoint.__table__
webhook_events = WebhookEvent.__table__
webhook_deliveries = WebhookDelivery.__table__
webhook_attempts = WebhookAttempt.__table__

__all__ = [
    "Account",
    "AccountKind",
    "AccountStatus",
    "ApiKey",
    "Balance",
    "BankStatementLine",
    "Base",
    "Customer",
    "Exchange",
    "ExchangeEvent",
    "LedgerEntry",
    "OperatorAction",
    "OpsCheck",
    "OutboxMessage",
    "ProcessHeartbeat",
    "Quote",
    "ReconciliationFinding",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
    "accounts",
    "api_keys",
    "balances",
    "bank_statement_lines",
    "customers",
    "exchange_events",
    "exchange_state_counts",
    "exchange_state_deltas",
    "exchanges",
    "ledger_entries",
    "operator_actions",
    "ops_checks",
    "outbox_messages",
    "process_heartbeats",
    "quotes",
    "reconciliation_findings",
    "relay_leases",
    "webhook_attempts",
    "webhook_deliveries",
    "webhook_endpoints",
    "webhook_events",
]
