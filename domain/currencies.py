"""ISO 4217 currency codes and their minor units (the number of decimals an amount may carry)."""

from __future__ import annotations

# Active codes from the ISO 4217 list, grouped by minor unit. Funds codes and precious
# metals (XAU, XDR, ...) are left out: nobody exchanges them through this service.
_BY_MINOR_UNIT: dict[int, str] = {
    0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
    3: "BHD IQD JOD KWD LYD OMR TND",
    4: "CLF UYW",
    2: (
        "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP "
        "BYN BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP "
        "GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT "
        "LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN "
        "NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP "
        "SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UZS VES WST "
        "XCD XCG YER ZAR ZMW ZWG"
    ),
}

MINOR_UNITS: dict[str, int] = {
    code: unit for unit, codes in _BY_MINOR_UNIT.items() for code in codes.split()
}


def is_iso_currency(code: str) -> bool:
    return code in MINOR_UNITS


def minor_unit(code: str) -> int:
    """Decimals allowed in an amount of `code`; KeyError for a code that is not ISO 4217."""
    return MINOR_UNITS[code]
