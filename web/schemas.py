"""Marshmallow schemas: what the JSON API accepts and how it answers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validates_schema

from domain.currencies import is_iso_currency
from domain.money import AmountError, check_amount, parse_amount


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
        if amount is not None and source:
            try:
                check_amount(amount, source, self.max_amount)
            except AmountError as error:
                errors["amount"] = [str(error)]
        if errors:
            raise ValidationError(errors)
