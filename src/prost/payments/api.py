"""Payments' HTTP API: internal only (other services call it; the gateway never routes it).

    POST /internal/payments/tokens   CardTokenCreate (= kit.cards.PaymentCardIn)
                                     → 201 CardTokenPublic {token, last4, brand}

Orders tokenises the customer's card here before it stores the order; from then on
only the token travels (in `payment.requested`). The card is checked by the shared
model (Luhn, expiry, CVC: 422 with nothing stored), then handed to the provider's
vault, which keeps the last four digits, the brand, the expiry and its simulated
outcome, never the number or the CVC. Nothing here logs or echoes the card.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status
from pydantic import BaseModel

from prost.kit.auth import ServiceCaller
from prost.kit.cards import PaymentCardIn
from prost.kit.service import ServiceContext, context_dependency
from prost.payments.provider import provider_of

Ctx = Annotated[ServiceContext, Depends(context_dependency("payments"))]

router = APIRouter(prefix="/internal/payments", include_in_schema=False)

CardTokenCreate = PaymentCardIn


class CardTokenPublic(BaseModel):
    token: str
    last4: str
    brand: str


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=CardTokenPublic)
async def create_card_token(card: CardTokenCreate, ctx: Ctx, _caller: ServiceCaller) -> CardTokenPublic:
    token = await provider_of(ctx).tokenize(card)
    return CardTokenPublic(token=token.token, last4=token.last4, brand=token.brand)
