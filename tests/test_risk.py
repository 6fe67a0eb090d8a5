"""The BI-RADS-like category follows the ACR likelihood ranges at their exact edges."""
from __future__ import annotations

import pytest

from ml.risk import birads_category


@pytest.mark.parametrize(("p", "category"), [
    (0.0, "3"), (0.02, "3"), (0.0201, "4A"), (0.10, "4A"), (0.1001, "4B"), (0.50, "4B"),
    (0.5001, "4C"), (0.9499, "4C"), (0.95, "5"), (1.0, "5"),
])
def test_category_edges(p, category):
    assert birads_category(p).category == category
