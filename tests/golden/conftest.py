"""``--update-golden``: rewrite the checked-in golden files from the current outputs instead of
comparing with them (``pytest tests/golden --update-golden``, then review ``git diff``).

The option lives here, not in the root conftest, so the golden tests keep to their folder; pytest
reads an option from a conftest only in the folder of the paths it is given, which is why the
test module sits next to this file.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/*.golden files from the current outputs")
