"""Money at the edges: integer cents inside, dollars and cents for people. Declared once here."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# Every amount the ledger accepts is within this bound (exclusive), in cents: $10 billion. It keeps
# sums of many amounts far inside PostgreSQL's bigint and is far above any real premium or payment.
AMOUNT_CENTS_MAX = 10**12

# X12 R type: optional sign, digits with an optional decimal point, an optional (short) exponent.
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,2})?")


class AmountError(ValueError):
    """A text is not an exact amount of dollars and cents."""


def format_cents(amount: int) -> str:
    """``-123456`` -> ``-$1,234.56``: how every report, CLI table and explanation prints money."""
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(amount) // 100:,}.{abs(amount) % 100:02d}"


def to_cents(text: str) -> int:
    """A decimal amount as files write it ("255", "-10.5", "78.12") to integer cents, exactly; never
    through a float. A fraction of a cent, or an amount beyond ``AMOUNT_CENTS_MAX``, is an error."""
    raw = text.strip()
    if not _DECIMAL.fullmatch(raw):
        raise AmountError(f"{raw!r} is not a decimal amount")
    try:
        value = Decimal(raw)
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only valid decimals
        raise AmountError(f"{raw!r} is not a decimal amount") from exc
    cents = value * 100
    if cents != cents.to_integral_value():
        raise AmountError(f"{raw!r} has a fraction of a cent")
    if abs(cents) >= AMOUNT_CENTS_MAX:
        raise AmountError(f"{raw!r} is beyond the ledger's bound of {format_cents(AMOUNT_CENTS_MAX)}")
    return int(cents)


def parse_dollars(text: str) -> int:
    """Dollars and cents as people type them ("1,234.56", "$12", "-$5.10") to integer cents, exactly."""
    raw = text.strip().replace(",", "").replace(" ", "")
    sign = ""
    if raw[:1] in "+-" and raw:
        sign, raw = raw[0], raw[1:]
    return to_cents(sign + raw.removeprefix("$"))
