"""One admission budget over several frontends' Admission objects (shared memory, one slot each)."""

from __future__ import annotations

import pytest

from m3engine.errors import OverloadedError
from m3engine.scheduling.admission import Admission
from m3engine.scheduling.shared_budget import SharedBudget


def test_frontends_share_one_budget_and_keep_their_own_counts() -> None:
    budget = SharedBudget(2)
    first, second = (Admission(2, 100, shared=budget, slot=i) for i in range(2))
    a = first.reserve(30)
    b = second.reserve(50)
    assert budget.totals() == (2, 80) and (first.requests, second.requests) == (1, 1)
    with pytest.raises(OverloadedError):  # the request budget is full, though `first` holds only one
        first.reserve(1)
    b.release()
    with pytest.raises(OverloadedError):  # tokens: 30 + 80 > 100
        second.reserve(80)
    c = second.reserve(60)
    c.resize(10)
    assert budget.totals() == (2, 40) and second.tokens == 10
    assert a.tokens == 30
    budget.clear(0)  # what the parent does for a frontend that died: its requests died with it
    assert budget.totals() == (1, 10)
    c.release()
    assert budget.totals() == (0, 0) and (second.requests, second.tokens) == (0, 0)
