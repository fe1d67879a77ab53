"""Amounts are exact decimal strings, checked against the currency's minor unit. No I/O here."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from domain.currencies import MINOR_UNITS, minor_unit
from domain.money import STORAGE_SCALE, AmountError, check_amount, decimals_of, parse_amount, quantize
from domain.money import money_text as money
from services.exchanges import ExchangeRequest
from settings import Settings
from web.schemas import ExchangeRequestSchema, field_problems

# Derandomized and without a deadline: the same examples on every run, and no
# assertion about how long an example takes.
PROFILE = settings(
    derandomize=True, deadline=None, database=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow]
)

CURRENCIES = Settings().currencies
MAX_AMOUNT = Settings().max_exchange_amount
#: The largest whole part parse_amount accepts has this many digits (and so many decimals at most).
MAX_WHOLE_DIGITS = 18


def plain(amount: Decimal, places: int) -> str:
    """`amount` written in plain notation with exactly `places` decimals ("125.50", never "1.255E+2")."""
    return f"{amount:.{places}f}"


@st.composite
def amounts(draw: st.DrawFn, max_places: int = 4, maximum: Decimal = Decimal(10) ** MAX_WHOLE_DIGITS) -> str:
    places = draw(st.integers(min_value=0, max_value=max_places))
    units = draw(st.integers(min_value=0, max_value=int(maximum * 10**places) - 1))
    return plain(Decimal(units).scaleb(-places), places)


# --- parse_amount -----------------------------------------------------------------


@PROFILE
@given(amounts())
def test_parse_amount_round_trips_every_plain_decimal_string(text: str) -> None:
    amount = parse_amount(text)
    assert isinstance(amount, Decimal)
    assert str(amount) == text
    assert amount == Decimal(text)


@PROFILE
@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.booleans() | st.none()
       | st.lists(st.text(max_size=3), max_size=2) | st.dictionaries(st.text(max_size=3), st.text(max_size=3)))
def test_parse_amount_refuses_anything_but_a_string(value: Any) -> None:
    with pytest.raises(AmountError, match="not a JSON number"):
        parse_amount(value)


@pytest.mark.parametrize(
    "text",
    [
        "", " ", ".", "1.", ".5", "01", "00.5", "-1", "+1", "-0", "1e5", "1E5", "1e-2", "1.5e3", "NaN", "nan",
        "Infinity", "inf", "-Infinity", " 1", "1 ", "1\n", "\n1", "1\t", "1 000", "1,000", "1,5", "1_000",
        "0x10", "\u0661\u0662", "\uff11\uff12",  # Arabic-Indic and full-width digits
        "1.2.3", "10.00\n", "\u00a01", "1" * (MAX_WHOLE_DIGITS + 1),
    ],
)
def test_parse_amount_refuses_strings_that_are_not_plain_decimals(text: str) -> None:
    with pytest.raises(AmountError, match="plain decimal"):
        parse_amount(text)


@PROFILE
@given(amounts(), st.sampled_from([" ", "\n", "\t", "\r", "\u00a0", "\u2003"]), st.booleans())
def test_parse_amount_refuses_surrounding_whitespace(text: str, space: str, before: bool) -> None:
    with pytest.raises(AmountError):
        parse_amount(space + text if before else text + space)


@PROFILE
@given(amounts(), st.sampled_from(["-", "+"]))
def test_parse_amount_refuses_a_sign(text: str, sign: str) -> None:
    with pytest.raises(AmountError):
        parse_amount(sign + text)


@PROFILE
@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=Decimal("0.0001"), max_value=Decimal("1e6")))
def test_parse_amount_refuses_scientific_notation(amount: Decimal) -> None:
    with pytest.raises(AmountError):
        parse_amount(f"{amount:e}")


# --- check_amount -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "places"), [("JPY", 0), ("USD", 2), ("CAD", 2), ("KWD", 3), ("BHD", 3), ("CLF", 4)]
)
def test_minor_units_follow_iso_4217(currency: str, places: int) -> None:
    assert minor_unit(currency) == places


@PROFILE
@given(st.sampled_from(["JPY", "USD", "KWD", "CLF"]), st.data())
def test_check_amount_accepts_any_positive_amount_in_the_minor_unit_up_to_the_maximum(
    currency: str, data: st.DataObject
) -> None:
    text = data.draw(amounts(max_places=minor_unit(currency), maximum=MAX_AMOUNT + 1))
    amount = parse_amount(text)
    if amount == 0:
        amount = Decimal(1)
    check_amount(min(amount, MAX_AMOUNT), currency, MAX_AMOUNT)


@PROFILE
@given(st.sampled_from(["JPY", "USD", "KWD"]), st.integers(min_value=1, max_value=6), st.data())
def test_check_amount_refuses_more_decimals_than_the_minor_unit(
    currency: str, extra: int, data: st.DataObject
) -> None:
    places = minor_unit(currency) + extra
    whole = data.draw(st.integers(min_value=0, max_value=999_999))
    # The last decimal is not zero, so the amount really has `places` decimals.
    fraction = data.draw(st.integers(min_value=0, max_value=10 ** (places - 1) - 1)) * 10 + data.draw(
        st.integers(min_value=1, max_value=9)
    )
    amount = parse_amount(f"{whole}.{fraction:0{places}d}")
    with pytest.raises(AmountError, match=f"at most {minor_unit(currency)} decimal"):
        check_amount(amount, currency, MAX_AMOUNT)


@pytest.mark.parametrize(
    ("text", "currency"),
    [("1.5", "JPY"), ("0.5", "JPY"), ("10.001", "USD"), ("10.001", "CAD"), ("1.0001", "KWD"), ("0.00001", "CLF")],
)
def test_check_amount_refuses_examples_beyond_the_minor_unit(text: str, currency: str) -> None:
    with pytest.raises(AmountError, match="decimal places"):
        check_amount(parse_amount(text), currency, MAX_AMOUNT)


@pytest.mark.parametrize(
    ("text", "currency"), [("100", "JPY"), ("100.0", "JPY"), ("10.10", "USD"), ("10.100", "USD"), ("1.001", "KWD")]
)
def test_trailing_zeros_do_not_count_as_decimals(text: str, currency: str) -> None:
    check_amount(parse_amount(text), currency, MAX_AMOUNT)


@pytest.mark.parametrize("text", ["0", "0.0", "0.00", "0.0000"])
def test_check_amount_refuses_zero(text: str) -> None:
    with pytest.raises(AmountError, match="greater than zero"):
        check_amount(parse_amount(text), "USD", MAX_AMOUNT)


def test_check_amount_refuses_a_negative_decimal() -> None:
    with pytest.raises(AmountError, match="greater than zero"):
        check_amount(Decimal("-1"), "USD", MAX_AMOUNT)


def test_check_amount_accepts_exactly_the_maximum_and_refuses_one_minor_unit_more() -> None:
    check_amount(MAX_AMOUNT, "USD", MAX_AMOUNT)
    with pytest.raises(AmountError, match="exceed"):
        check_amount(MAX_AMOUNT + Decimal("0.01"), "USD", MAX_AMOUNT)
    with pytest.raises(AmountError, match="exceed"):
        check_amount(MAX_AMOUNT + 1, "JPY", MAX_AMOUNT)


@PROFILE
@given(st.integers(min_value=1, max_value=10**MAX_WHOLE_DIGITS - 1), st.integers(min_value=1, max_value=9))
def test_decimals_are_counted_exactly_even_beyond_28_significant_digits(whole: int, last: int) -> None:
    # Decimal's default context keeps 28 digits; an amount of up to 36 digits (18 whole,
    # 18 decimal) must not be rounded to a whole number when its decimals are counted.
    amount = parse_amount(f"{whole}.{'0' * 17}{last}")
    assert decimals_of(amount) == 18
    with pytest.raises(AmountError, match="decimal places"):
        check_amount(amount, "USD", Decimal(10) ** MAX_WHOLE_DIGITS)


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [("125.5", "USD", "125.50"), ("0.005", "USD", "0.01"), ("0.004", "USD", "0.00"), ("1.5", "JPY", "2"),
     ("2.5", "JPY", "3"), ("1.0005", "KWD", "1.001")],
)
def test_quantize_rounds_half_up_to_the_minor_unit(amount: str, currency: str, expected: str) -> None:
    assert str(quantize(Decimal(amount), currency)) == expected


# --- ExchangeRequestSchema ----------------------------------------------------------


def schema() -> ExchangeRequestSchema:
    return ExchangeRequestSchema(currencies=CURRENCIES, max_amount=MAX_AMOUNT)


@st.composite
def valid_requests(draw: st.DrawFn) -> dict[str, Any]:
    source, target = draw(st.lists(st.sampled_from(CURRENCIES), min_size=2, max_size=2, unique=True))
    text = draw(amounts(max_places=minor_unit(source), maximum=MAX_AMOUNT))
    if parse_amount(text) == 0:
        text = "1"
    return {"account": str(draw(st.uuids())), "from_currency": source, "to_currency": target, "amount": text}


@PROFILE
@given(valid_requests())
def test_schema_accepts_every_valid_request(body: dict[str, Any]) -> None:
    data = schema().load(body)
    assert data == {
        "account": uuid.UUID(body["account"]),
        "from_currency": body["from_currency"],
        "to_currency": body["to_currency"],
        "amount": Decimal(body["amount"]),
    }


#: For each field, values that must be refused (on their own, in an otherwise valid request).
INVALID_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "account": st.one_of(
        st.integers(), st.none(), st.booleans(), st.floats(),
        st.text(alphabet="ghijklmnopqrstuvwxyz-", min_size=0, max_size=40),
    ),
    "from_currency": st.one_of(
        st.integers(), st.none(), st.floats(),
        st.text(max_size=5).filter(lambda code: code not in CURRENCIES),
    ),
    "to_currency": st.one_of(
        st.integers(), st.none(), st.floats(),
        st.text(max_size=5).filter(lambda code: code not in CURRENCIES),
    ),
    "amount": st.one_of(
        st.floats(), st.integers(), st.none(), st.booleans(),
        st.sampled_from(["0", "0.00", "-1", "1e3", "10.001", " 1", "1\n", "NaN", str(MAX_AMOUNT + 1)]),
    ),
}


@PROFILE
@given(valid_requests(), st.sampled_from(sorted(INVALID_VALUES)), st.data())
def test_schema_refuses_an_invalid_field_by_its_name(body: dict[str, Any], name: str, data: st.DataObject) -> None:
    body = {**body, name: data.draw(INVALID_VALUES[name], label=name)}
    with pytest.raises(ValidationError) as refused:
        schema().load(body)
    assert name in refused.value.messages


@PROFILE
@given(valid_requests(), st.sampled_from(["account", "from_currency", "to_currency", "amount"]))
def test_schema_names_a_missing_field(body: dict[str, Any], name: str) -> None:
    del body[name]
    with pytest.raises(ValidationError) as refused:
        schema().load(body)
    assert name in refused.value.messages


@PROFILE
@given(valid_requests(), st.text(min_size=1, max_size=12).filter(
    lambda name: name not in {"account", "from_currency", "to_currency", "amount"}
))
def test_schema_names_an_unknown_field(body: dict[str, Any], name: str) -> None:
    with pytest.raises(ValidationError) as refused:
        schema().load({**body, name: "x"})
    assert name in refused.value.messages


@PROFILE
@given(valid_requests())
def test_schema_refuses_the_same_currency_on_both_sides(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as refused:
        schema().load({**body, "to_currency": body["from_currency"]})
    assert "to_currency" in refused.value.messages


def test_every_traded_currency_is_iso_4217() -> None:
    assert set(CURRENCIES) <= set(MINOR_UNITS)


#: Values that are wrong whatever the other fields hold ("10.001" is not: it is fine for KWD).
INVALID_ON_THEIR_OWN: dict[str, st.SearchStrategy[Any]] = {
    **INVALID_VALUES,
    "amount": st.one_of(
        st.floats(), st.integers(), st.none(), st.booleans(),
        st.sampled_from(["0", "0.00", "-1", "1e3", " 1", "1\n", "NaN", "", str(MAX_AMOUNT + 1),
                         str(MAX_AMOUNT + Decimal("0.0001"))]),
    ),
}


@PROFILE
@given(valid_requests(), st.sets(st.sampled_from(sorted(INVALID_ON_THEIR_OWN)), min_size=2), st.data())
def test_every_invalid_field_of_a_request_is_named_in_one_answer(
    body: dict[str, Any], names: set[str], data: st.DataObject
) -> None:
    # A client fixes its request in one round trip: a wrong currency does not hide a zero amount.
    for name in sorted(names):
        body[name] = data.draw(INVALID_ON_THEIR_OWN[name], label=name)
    with pytest.raises(ValidationError) as refused:
        schema().load(body)
    fields = field_problems(refused.value.messages)  # what the API's `error.fields` and the portal show
    assert names <= set(fields)
    assert all(problems and all(isinstance(p, str) and p for p in problems) for problems in fields.values())


# --- what the API writes, it reads back ------------------------------------------------------


@PROFILE
@given(st.sampled_from([*CURRENCIES, "KWD", "CLF"]), st.data())
def test_an_amount_as_the_api_writes_it_parses_back_to_the_same_amount(currency: str, data: st.DataObject) -> None:
    text = data.draw(amounts(max_places=minor_unit(currency), maximum=MAX_AMOUNT + 1))
    # As the database hands it back: every amount column has STORAGE_SCALE decimals.
    stored = parse_amount(text).quantize(Decimal(1).scaleb(-STORAGE_SCALE))

    written = money(stored, currency)

    assert written == plain(parse_amount(text), minor_unit(currency))  # "125.50", "1000", never "1E+3"
    assert parse_amount(written) == parse_amount(text)
    assert parse_amount(money(parse_amount(written), currency)) == parse_amount(written)


@PROFILE
@given(valid_requests())
def test_a_request_rebuilt_from_what_the_api_answers_is_the_same_request(body: dict[str, Any]) -> None:
    data = schema().load(body)
    answered = {**body, "amount": money(data["amount"], data["from_currency"])}  # as in the 202 answer
    again = schema().load(answered)
    assert again == data
    request = ExchangeRequest(again["account"], again["from_currency"], again["to_currency"], again["amount"])
    original = ExchangeRequest(data["account"], data["from_currency"], data["to_currency"], data["amount"])
    assert request.fingerprint() == original.fingerprint()  # a retry with the answered body replays
