"""Reliability pieces shared by all features: the circuit breaker and admission control."""

from __future__ import annotations

from uwsx.reliability.breaker import CircuitBreaker, with_breaker

__all__ = ["CircuitBreaker", "with_breaker"]
