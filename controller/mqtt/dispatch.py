"""Moved to :mod:`controller.dispatch` (the dispatch SDK); this name is kept so that older
imports keep working."""

from __future__ import annotations

from controller.dispatch import BrokerError, DispatchClient, Received

__all__ = ["BrokerError", "DispatchClient", "Received"]
