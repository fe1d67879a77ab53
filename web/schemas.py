"""Marshmallow schemas: what the JSON API accepts and how it answers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validates_schema

from domain.currencies import is_iso_currency
from domain.money import AmountError, check_amount, parse_amount
from domain.states import ExchangeState


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


class ExchangeRequestSchema(Schema):
    """POST /api/exchanges. Unknown fields are refused, by name."""

    class Meta:
        unknown = RAISE

    def __init__(self, *, currencies: tuple[str, ...], max_amount: Decimal, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.currencies = currencies
        self.max_amount = max_amount

    account = fields.UUID(required=True)
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


class ExchangeSchema(_ExchangeIdentity):
    rate = fields.String(required=True, allow_none=True)
    to_amount = fields.String(required=True, allow_none=True)
    state = fields.String(required=True, metadata={"enum": [s.value for s in ExchangeState]})
    step = fields.String(required=True, allow_none=True)
    attempt = fields.Integer(required=True)
    last_error = fields.String(required=True, allow_none=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)


class TimelineEventSchema(Schema):
    at = fields.DateTime(required=True)
    step = fields.String(required=True)
    attempt = fields.Integer(required=True)
    outcome = fields.String(required=True)
    state = fields.String(required=True)
    error = fields.String(required=True, allow_none=True)
    worker = fields.String(required=True, allow_none=True)
    message_id = fields.UUID(required=True, allow_none=True)
    message_published_at = fields.DateTime(required=True, allow_none=True)
    duration_ms = fields.Integer(required=True, allow_none=True)
    detail = fields.Dict(required=True, allow_none=True)


class TimelineSchema(Schema):
    id = fields.UUID(required=True)
    state = fields.String(required=True)
    step = fields.String(required=True, allow_none=True)
    attempt = fields.Integer(required=True)
    last_error = fields.String(required=True, allow_none=True)
    trouble = fields.Nested(TimelineEventSchema, required=True, allow_none=True)
    events = fields.List(fields.Nested(TimelineEventSchema), required=True)


class BalanceSchema(Schema):
    currency = fields.String(required=True)
    available = fields.String(required=True)
    held = fields.String(required=True)
    minor_unit = fields.Integer(required=True)


class AccountSchema(Schema):
    id = fields.UUID(required=True)
    owner = fields.String(required=True)
    status = fields.String(required=True)
    balances = fields.List(fields.Nested(BalanceSchema), required=True)
