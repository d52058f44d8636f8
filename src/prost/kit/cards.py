"""Payment cards as clients send them, checked before anything is stored.

`PaymentCardIn` is the `payment` object of `POST /api/v1/orders`, of the cart's
checkout and of the orders' internal API: `{card_number, exp_month, exp_year, cvc}`.
A body that fails any rule below is a 422 with nothing stored:

- `card_number`: 12-19 digits (spaces and dashes between groups are dropped) that
  pass the Luhn check;
- `exp_month` 1-12, `exp_year` four digits; the card is valid through the last day
  of its expiry month (UTC), so an expiry in the past is refused, and one more than
  20 years ahead too;
- `cvc`: 3 or 4 digits.

The number and the CVC never show up in a `repr`, a log line or an error message
(pydantic's errors carry the input, but the error handlers of `kit.errors` keep only
location, message and type). Only `last4` and `brand` may be kept.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_YEARS_AHEAD = 20
_SEPARATORS = re.compile(r"[ \-]")
_DIGITS = re.compile(r"^[0-9]+$")


def luhn_valid(number: str) -> bool:
    """The Luhn (mod 10) check digit test; `number` is digits only."""
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = ord(char) - 48
        if position % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def brand(number: str) -> str:
    """The card network from the number's prefix (IIN ranges); `unknown` otherwise."""
    if number.startswith("4"):
        return "visa"
    two, four, six = int(number[:2]), int(number[:4]), int(number[:6])
    if 51 <= two <= 55 or 222100 <= six <= 272099:
        return "mastercard"
    if two in (34, 37):
        return "amex"
    if four == 6011 or two == 65 or 644 <= int(number[:3]) <= 649:
        return "discover"
    if 3528 <= four <= 3589:
        return "jcb"
    if two in (36, 38, 39) or 300 <= int(number[:3]) <= 305:
        return "diners"
    return "unknown"


def last4(number: str) -> str:
    return number[-4:]


class PaymentCardIn(BaseModel):
    """A card as the client sends it. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    card_number: Annotated[str, Field(repr=False, min_length=12, max_length=40)]
    exp_month: Annotated[int, Field(ge=1, le=12)]
    exp_year: Annotated[int, Field(ge=2000, le=2999)]
    cvc: Annotated[str, Field(repr=False)]

    @field_validator("card_number")
    @classmethod
    def _number(cls, value: str) -> str:
        digits = _SEPARATORS.sub("", value)
        if not _DIGITS.match(digits) or not 12 <= len(digits) <= 19:
            raise ValueError("card number must be 12 to 19 digits")
        if not luhn_valid(digits):
            raise ValueError("card number is not valid (Luhn check failed)")
        return digits

    @field_validator("cvc")
    @classmethod
    def _cvc(cls, value: str) -> str:
        if not _DIGITS.match(value) or not 3 <= len(value) <= 4:
            raise ValueError("cvc must be 3 or 4 digits")
        return value

    @model_validator(mode="after")
    def _not_expired(self) -> Self:
        now = datetime.now(UTC)
        if (self.exp_year, self.exp_month) < (now.year, now.month):
            raise ValueError("the card has expired")
        if self.exp_year > now.year + MAX_YEARS_AHEAD:
            raise ValueError("expiry year is too far in the future")
        return self

    @property
    def last4(self) -> str:
        return last4(self.card_number)

    @property
    def brand(self) -> str:
        return brand(self.card_number)

    def masked(self) -> str:
        """For humans and logs: `visa ****4242`."""
        return f"{self.brand} ****{self.last4}"
