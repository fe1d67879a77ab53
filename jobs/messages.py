"""Actor names that outbox messages address. Kept free of Dramatiq so writers need not import it."""

QUOTE_EXCHANGE = "quote_exchange"
DEBIT_EXCHANGE = "debit_exchange"
CREDIT_EXCHANGE = "credit_exchange"
COMPLETE_EXCHANGE = "complete_exchange"
COMPENSATE_EXCHANGE = "compensate_exchange"
SEND_RECEIPT = "send_receipt"
RESOLVE_EXCHANGE = "resolve_exchange"
