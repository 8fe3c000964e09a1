"""The commands an operator sends the ledger, in the fold: top-ups, corrections, price changes.

One dispatch for :mod:`tollway.ledger.handlers`: which input types these are and which pure
decision takes each (:mod:`tollway.ledger.fold_topup`, :mod:`tollway.ledger.fold_corrections`,
:mod:`tollway.ledger.fold_prices`). What they decide on is loaded by
:func:`tollway.ledger.batch_store.fill_inputs`. No IO.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tollway.events.gateway import AdjustmentRequested, ReversalRequested, TopUpRequested
from tollway.events.routing import PriceTableChangeRequested
from tollway.ledger import fold_corrections, fold_prices, fold_topup

if TYPE_CHECKING:
    from tollway.events.envelope import Envelope
    from tollway.ledger.fold import Decision, State

FOLDED = (TopUpRequested, ReversalRequested, AdjustmentRequested, PriceTableChangeRequested)


def decide(state: State, env: Envelope[Any]) -> Decision | None:
    """The decision on a top-up, correction or price change; None for any other input."""
    p = env.payload
    if isinstance(p, TopUpRequested):
        return fold_topup.decide_topup(state, env)
    if isinstance(p, ReversalRequested):
        return fold_corrections.decide_reversal(state, env)
    if isinstance(p, AdjustmentRequested):
        return fold_corrections.decide_adjustment(state, env)
    if isinstance(p, PriceTableChangeRequested):
        return fold_prices.decide_change(state, env)
    return None
