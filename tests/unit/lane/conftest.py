from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.unit.lane.harness import Lane


@pytest.fixture
async def lane() -> AsyncIterator[Lane]:
    built = await Lane.create()
    try:
        yield built
    finally:
        await built.close()
