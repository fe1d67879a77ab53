"""Marshmallow schemas: what the JSON API accepts and how it answers."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, pre_load, validate, validates_schema

from domain.currencies import is_iso_currency
from domain.customer_view import CustomerStatus
from domain.money import AmountError, check_amount, parse_amount
from domain.states import ExchangeState
from errors import ValidationFailed


class AmountField(fields.Field):
    """A decimal string, parsed exactly; JSON numbers are refused (floats lose cents)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        try:
            return parse_amount(value)
        except AmountError as error:
            raise ValidationError(str(error)) from None


class CurrencyField(fields.Field):
    """An ISO 4217 code that this deployment trades (the schema's `currencies`)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise ValidationError("Must be a string holding an ISO 4217 code such as \"USD\".")
        if not is_iso_currency(value):
            raise ValidationError(f"{value[:10]!r} is not an ISO 4217 currency code (use upper case, e.g. \"USD\").")
        supported = self.parent.currencies  # type: ignore[union-attr]
        if value not in supported:
            raise ValidationError(f"{value} is not traded here; supported: {', '.join(supported)}.")
        return value


class QuoteRequestSchema(Schema):
    """POST /api/quotes: a pair and a source amount. Unknown fields are refused, by name."""

    class Meta:
        unknown = RAISE

    def __init__(self, *, currencies: tuple[str, ...], max_amount: Decimal, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.currencies = currencies
        self.max_amount = max_amount

    from_currency = CurrencyField(required=True)
    to_currency = CurrencyField(required=True)
    amount = AmountField(required=True)

    @validates_schema(skip_on_field_errors=False)
    def _rules_across_fields(self, data: dict[str, Any], **kwargs: Any) -> None:
        errors: dict[str, list[str]] = {}
        source, target = data.get("from_currency"), data.get("to_currency")
        if source and target and source == target:
            errors["to_currency"] = ["Must differ from from_currency."]
        amount = data.get("amount")
        if amount is not None:
            try:
                # Without a valid source currency, the bounds are still checked: every
                # wrong field is named in one answer.
                check_amount(amount, source or None, self.max_amount)
            except AmountError as error:
                errors["amount"] = [str(error)]
        if errors:
            raise ValidationError(errors)


#: The fields an exchange takes from its quote when it names one.
QUOTED_FIELDS = ("from_currency", "to_currency", "amount")


class ExchangeRequestSchema(QuoteRequestSchema):
    """POST /api/exchanges: an account and either a pair and amount, or a quote (or both, matching)."""

    account = fields.UUID(required=True)
    quote_id = fields.UUID(metadata={"description": "A quote from `POST /api/quotes`, not expired: the exchange "
                                                    "gets its rate and target amount. `from_currency`, "
                                                    "`to_currency` and `amount` may then be left out.",
                                     "example": "3f0c2d9e-8a4b-4c1e-9d7a-2b5e6f8a9c01"})
    from_currency = CurrencyField(metadata={"description": "Required unless `quote_id` is given."})
    to_currency = CurrencyField(metadata={"description": "Required unless `quote_id` is given."})
    amount = AmountField(metadata={"description": "Required unless `quote_id` is given."})

    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def _pair_or_quote(self, data: dict[str, Any], original: Any, **kwargs: Any) -> None:
        if "quote_id" in original:
            return
        # Asked of what was sent: a field that was sent but invalid already has its own message.
        missing = {name: ["Missing data for required field."] for name in QUOTED_FIELDS if name not in original}
        if missing:
            raise ValidationError(missing)


class ListQuerySchema(Schema):
    """GET /api/exchanges' query: a page size, the cursor of the previous page, filters."""

    class Meta:
        unknown = RAISE

    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100),
                           metadata={"description": "Exchanges per page, 1 to 100 (default 20)."})
    cursor = fields.String(validate=validate.Length(min=1, max=200),
                           metadata={"description": "`next_cursor` of the previous page."})
    state = fields.List(fields.String(validate=validate.OneOf([s.value for s in ExchangeState])),
                        metadata={"description": "Only these states (repeat the parameter for several)."})
    created_after = fields.AwareDateTime(default_timezone=UTC,
                                         metadata={"description": "Created at or after (ISO 8601)."})
    created_before = fields.AwareDateTime(default_timezone=UTC, metadata={"description": "Created before (ISO 8601)."})

    @pre_load
    def _repeated_state(self, data: Any, **kwargs: Any) -> Any:
        if hasattr(data, "getlist"):  # a query string: `state` may repeat, the rest may not
            loaded = {key: data.get(key) for key in data}
            if "state" in data:
                loaded["state"] = data.getlist("state")
            return loaded
        return data


# --- answers -----------------------------------------------------------------------------
# Amounts leave the API as strings in the currency's minor unit ("125.50", "1000").


class ErrorDetailSchema(Schema):
    code = fields.String(required=True, metadata={"description": "Stable, documented error code."})
    message = fields.String(required=True)
    fields_ = fields.Dict(keys=fields.String(), values=fields.List(fields.String()), data_key="fields",
                          metadata={"description": "The offending fields (or headers) and what is wrong."})


class ErrorSchema(Schema):
    error = fields.Nested(ErrorDetailSchema, required=True)


class _ExchangeIdentity(Schema):
    """What every answer about one exchange starts with."""

    id = fields.UUID(required=True)
    account = fields.UUID(required=True)
    from_currency = fields.String(required=True)
    to_currency = fields.String(required=True)
    amount = fields.String(required=True)


class ExchangeAcceptedSchema(_ExchangeIdentity):
    accepted_at = fields.DateTime(required=True)
    status_url = fields.String(required=True)


class _Standing(Schema):
    """Where an exchange stands, for its customer: in plain words, without internal errors."""

    id = fields.UUID(required=True)
    state = fields.String(required=True, metadata={"enum": [s.value for s in ExchangeState]})
    step = fields.String(required=True, allow_none=True)
    attempt = fields.Integer(required=True)
    status = fields.String(required=True, metadata={
        "enum": [s.value for s in CustomerStatus],
        "description": "`processing`, `delayed` (a step is being retried), `under_review` (our team is "
                       "checking it; nothing for you to do), `refunding`, `completed`, `refunded` or `failed`."})
    status_message = fields.String(required=True, metadata={"description": "One sentence for the customer.",
                                                            "example": "Delayed: our bank is not answering and we "
                                                                       "are retrying. Your money is held, not lost."})
    failure_reason = fields.String(required=True, allow_none=True, metadata={
        "description": "Why it was refunded or failed; never null then, null otherwise."})
    final = fields.Boolean(required=True, metadata={
        "description": "Nothing more happens on its own (done, or waiting for our team): stop polling."})


class ExchangeSchema(_Standing):
    account = fields.UUID(required=True)
    from_currency = fields.String(required=True)
    to_currency = fields.String(required=True)
    amount = fields.String(required=True)
    rate = fields.String(required=True, allow_none=True, metadata={
        "description": "Units of `to_currency` per unit of `from_currency`; null until priced.", "example": "0.731"})
    to_amount = fields.String(required=True, allow_none=True, metadata={"example": "91.38"})
    quote = fields.UUID(required=True, allow_none=True, metadata={
        "description": "The quote it was accepted on (its rate is honoured), or null: priced when it runs."})
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)


class QuoteSchema(Schema):
    """A firm price: an exchange that names `id` before `expires_at` gets exactly this rate and amount."""

    id = fields.UUID(required=True)
    from_currency = fields.String(required=True, metadata={"example": "CAD"})
    to_currency = fields.String(required=True, metadata={"example": "USD"})
    amount = fields.String(required=True, metadata={"description": "What the customer pays, in from_currency.",
                                                    "example": "125.00"})
    rate = fields.String(required=True, metadata={"description": "Units of to_currency per unit of from_currency.",
                                                  "example": "0.731"})
    to_amount = fields.String(required=True, metadata={"description": "What the customer gets, in to_currency.",
                                                       "example": "91.38"})
    created_at = fields.DateTime(required=True)
    expires_at = fields.DateTime(required=True, metadata={"description": "Name it in an exchange before this."})
    status = fields.String(required=True, metadata={"enum": ["open", "used", "expired"]})
    exchange = fields.UUID(required=True, allow_none=True, metadata={"description": "The exchange that used it."})


class ExchangePageSchema(Schema):
    data = fields.List(fields.Nested(ExchangeSchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True,
                                metadata={"description": "Pass as `cursor` for the next page; null on the last."})


class CustomerEventSchema(Schema):
    at = fields.DateTime(required=True)
    event = fields.String(required=True, metadata={"enum": ["accepted", "rate_fixed", "debited", "paid",
                                                            "completed", "delayed", "under_review", "refunded",
                                                            "failed"]})
    message = fields.String(required=True)


class TimelineSchema(_Standing):
    events = fields.List(fields.Nested(CustomerEventSchema), required=True)


class BalanceSchema(Schema):
    currency = fields.String(required=True)
    available = fields.String(required=True)
    held = fields.String(required=True)
    minor_unit = fields.Integer(required=True)


class AccountSchema(Schema):
    id = fields.UUID(required=True)
    owner = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": ["active", "frozen", "closed"],
                                                    "description": "Only an active account can exchange."})
    balances = fields.List(fields.Nested(BalanceSchema), required=True)


def validated(schema: Schema, data: Any, *, what: str = "request") -> dict[str, Any]:
    """`data` loaded by `schema`, or ValidationFailed (a 422 naming each field and its problem)."""
    try:
        return schema.load(data)
    except ValidationError as error:
        heading = "The query has invalid parameters." if what == "query" else "The request has invalid fields."
        raise ValidationFailed(heading, fields=field_problems(error.messages)) from None


def field_problems(messages: Any) -> dict[str, list[str]]:
    """Marshmallow's nested messages as {field: [problem, ...]}."""
    if isinstance(messages, list):
        return {"body": [str(m) for m in messages]}
    flat: dict[str, list[str]] = {}
    for name, problems in messages.items():
        field = "body" if name == "_schema" else str(name)
        flat.setdefault(field, []).extend(str(p) for p in (problems if isinstance(problems, list) else [problems]))
    return flat
