"""Prometheus metrics for every feature, over ``prometheus_client``.

Features take ``metrics=`` (a :class:`Metrics`) and build their instruments once at construction.
Without it they use :data:`NULL_METRICS`, whose instruments do nothing: zero work when not
configured. ``prometheus_client`` is imported only when a :class:`Metrics` is created (install
the ``uwsx[prometheus]`` extra).

Cardinality control: ``map_topic`` maps topic label values to a bounded set, and every metric
keeps at most ``max_series`` label combinations; further combinations are dropped and counted in
``<prefix>prometheus_series_dropped_total{metric}`` (with a one-time warning per metric).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from uwsx.errors import InvalidNameError

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = [
    "DEFAULT_BUCKETS",
    "NULL_METRICS",
    "Counter",
    "Gauge",
    "Histogram",
    "Metrics",
    "MetricsLike",
    "NullMetrics",
]

log = logging.getLogger("uwsx.metrics")
_T = TypeVar("_T", bound="_Instrument")

DEFAULT_BUCKETS: tuple[float, ...] = (1, 5, 10, 25, 50, 100, 250, 500, 1000)
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class Counter(Protocol):
    def inc(self, amount: float = 1, /, **labels: str) -> None: ...


class Gauge(Protocol):
    def set(self, value: float, /, **labels: str) -> None: ...

    def inc(self, amount: float = 1, /, **labels: str) -> None: ...

    def dec(self, amount: float = 1, /, **labels: str) -> None: ...

    def collect(self, callback: Callable[[Gauge], None]) -> None: ...


class Histogram(Protocol):
    def observe(self, value: float, /, **labels: str) -> None: ...


class MetricsLike(Protocol):
    """What features need from a metrics registry (:class:`Metrics` or :class:`NullMetrics`)."""

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter: ...

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge: ...

    def histogram(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] | None = None,
    ) -> Histogram: ...

    def map_topic(self, topic: str) -> str: ...


class _Noop:
    __slots__ = ()

    def inc(self, amount: float = 1, /, **labels: str) -> None:
        pass

    def dec(self, amount: float = 1, /, **labels: str) -> None:
        pass

    def set(self, value: float, /, **labels: str) -> None:
        pass

    def observe(self, value: float, /, **labels: str) -> None:
        pass

    def collect(self, callback: Callable[[Gauge], None]) -> None:
        pass


_NOOP = _Noop()


class NullMetrics:
    """Metrics that record nothing (the default of every feature)."""

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        return _NOOP

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        return _NOOP

    def histogram(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] | None = None,
    ) -> Histogram:
        return _NOOP

    def map_topic(self, topic: str) -> str:
        return topic


NULL_METRICS = NullMetrics()


def _finite(value: object, method: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{method}: value must be a finite number, got {value!r}")
    return float(value)


class _Instrument:
    """Label checking and the series cap around one prometheus_client metric."""

    def __init__(self, owner: Metrics, name: str, labels: tuple[str, ...], metric: Any) -> None:
        self._owner = owner
        self.name = name
        self._labels = labels
        self._metric = metric
        self._series: set[tuple[str, ...]] = set()
        self._warned = False

    def _child(self, labels: dict[str, str]) -> Any:
        if set(labels) != set(self._labels):
            extra = sorted(set(labels) - set(self._labels))
            missing = sorted(set(self._labels) - set(labels))
            what = f"unexpected label(s) {extra}" if extra else f"missing label(s) {missing}"
            raise ValueError(f"{what} for metric {self.name!r} (expected: {list(self._labels)})")
        if not self._labels:
            return self._metric
        key = tuple(str(labels[k]) for k in self._labels)
        if key not in self._series:
            if len(self._series) >= self._owner.max_series:
                self._owner._dropped(self)
                return None
            self._series.add(key)
        return self._metric.labels(*key)

    def reset(self) -> None:
        self._series.clear()
        self._metric.clear() if self._labels else None


class _Counter(_Instrument):
    def inc(self, amount: float = 1, /, **labels: str) -> None:
        value = _finite(amount, "counter.inc()")
        if value < 0:
            raise ValueError("counter value must not be negative")
        child = self._child(labels)
        if child is not None:
            child.inc(value)


class _Gauge(_Instrument):
    def __init__(self, owner: Metrics, name: str, labels: tuple[str, ...], metric: Any) -> None:
        super().__init__(owner, name, labels, metric)
        self._callbacks: list[Callable[[Gauge], None]] = []

    def set(self, value: float, /, **labels: str) -> None:
        child = self._child(labels)
        if child is not None:
            child.set(_finite(value, "gauge.set()"))

    def inc(self, amount: float = 1, /, **labels: str) -> None:
        child = self._child(labels)
        if child is not None:
            child.inc(_finite(amount, "gauge.inc()"))

    def dec(self, amount: float = 1, /, **labels: str) -> None:
        child = self._child(labels)
        if child is not None:
            child.dec(_finite(amount, "gauge.dec()"))

    def collect(self, callback: Callable[[Gauge], None]) -> None:
        """At every scrape, clear the gauge's samples and call ``callback(gauge)`` to set them."""
        if not callable(callback):
            raise TypeError("collect callback must be callable")
        self._callbacks.append(callback)

    def refresh(self) -> None:
        if not self._callbacks:
            return
        if self._labels:
            self._metric.clear()
            self._series.clear()
        for callback in self._callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("gauge %s collect callback failed", self.name)


class _Histogram(_Instrument):
    def observe(self, value: float, /, **labels: str) -> None:
        child = self._child(labels)
        if child is not None:
            child.observe(_finite(value, "histogram.observe()"))


class Metrics:
    """A Prometheus registry with uwsx's conventions.

    :param prefix: prepended to every metric name.
    :param map_topic: maps topic label values (bounded cardinality); identity by default.
    :param default_buckets: histogram buckets when a metric names none.
    :param registry: a ``prometheus_client.CollectorRegistry`` (a private one by default).
    :param max_series: label combinations kept per metric.
    """

    def __init__(
        self,
        *,
        prefix: str = "",
        map_topic: Callable[[str], str] | None = None,
        default_buckets: Sequence[float] = DEFAULT_BUCKETS,
        registry: CollectorRegistry | None = None,
        max_series: int = 10_000,
    ) -> None:
        import prometheus_client
        from prometheus_client.registry import CollectorRegistry

        if map_topic is not None and not callable(map_topic):
            raise TypeError("map_topic must be callable")
        if isinstance(max_series, bool) or not isinstance(max_series, int) or max_series < 1:
            raise ValueError(f"max_series must be a positive integer, got {max_series!r}")
        if prefix and not _METRIC_NAME.match(prefix):
            raise InvalidNameError(f"invalid Prometheus metric prefix {prefix!r}")
        self._pc = prometheus_client
        self.prefix = prefix
        self._map_topic = map_topic
        self.default_buckets = tuple(default_buckets)
        self.registry: CollectorRegistry = registry if registry is not None else CollectorRegistry()
        self.max_series = max_series
        self._instruments: dict[str, _Instrument] = {}
        self._dropped_counter: _Counter | None = None
        self.registry.register(_Refresher(self))

    def map_topic(self, topic: str) -> str:
        return topic if self._map_topic is None else self._map_topic(topic)

    def _name(self, name: str) -> str:
        full = self.prefix + name
        if not isinstance(name, str) or not _METRIC_NAME.match(full):
            raise InvalidNameError(
                f"invalid Prometheus metric name {full!r} (must match [a-zA-Z_:][a-zA-Z0-9_:]*)"
            )
        return full

    @staticmethod
    def _labels(full: str, labels: Iterable[str]) -> tuple[str, ...]:
        if isinstance(labels, str):
            raise TypeError(f"metric {full!r}: labels must be a sequence of names, not a str")
        out = tuple(labels)
        for label in out:
            if not isinstance(label, str) or not _LABEL_NAME.match(label):
                raise InvalidNameError(f"invalid Prometheus label name {label!r}")
            if label.startswith("__"):
                raise InvalidNameError(f"invalid Prometheus label name {label!r} (__ is reserved)")
        if len(set(out)) != len(out):
            raise InvalidNameError(f"metric {full!r}: duplicate label names in {list(out)}")
        return out

    def _register(
        self,
        kind: type[_T],
        name: str,
        help: str,
        labels: Sequence[str],
        make: Callable[[str, tuple[str, ...]], Any],
    ) -> _T:
        """The instrument called ``name``: the existing one when registered with the same
        type (help and labels of the new call are ignored), else a new one built by ``make``."""
        full = self._name(name)
        existing = self._instruments.get(full)
        if existing is not None:
            if not isinstance(existing, kind):
                raise ValueError(f"metric {full!r} already registered as a different type")
            return existing
        names = self._labels(full, labels)
        inst = kind(self, full, names, make(full, names))
        self._instruments[full] = inst
        return inst

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        return self._register(
            _Counter,
            name,
            help,
            labels,
            lambda full, names: self._pc.Counter(full, help, names, registry=self.registry),
        )

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        return self._register(
            _Gauge,
            name,
            help,
            labels,
            lambda full, names: self._pc.Gauge(full, help, names, registry=self.registry),
        )

    def histogram(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] | None = None,
    ) -> Histogram:
        raw = self.default_buckets if buckets is None else tuple(buckets)
        for b in raw:
            if isinstance(b, bool) or not isinstance(b, int | float) or not math.isfinite(b):
                raise ValueError(
                    f"metric {self.prefix + name!r}: buckets must be finite numbers, got {b!r}"
                )
        bounds = sorted({float(b) for b in raw})
        return self._register(
            _Histogram,
            name,
            help,
            labels,
            lambda full, names: self._pc.Histogram(
                full, help, names, registry=self.registry, buckets=bounds
            ),
        )

    def _dropped(self, inst: _Instrument) -> None:
        if not inst._warned:
            inst._warned = True
            log.warning(
                "metric %s hit max_series cap %d; new series are dropped",
                inst.name,
                self.max_series,
            )
        if self._dropped_counter is None:
            full = self.prefix + "prometheus_series_dropped_total"
            metric = self._pc.Counter(
                full.removesuffix("_total"),
                "Label combinations dropped because a metric reached its max_series cap",
                ("metric",),
                registry=self.registry,
            )
            self._dropped_counter = _Counter(self, full, ("metric",), metric)
        self._dropped_counter._metric.labels(inst.name).inc()

    def refresh(self) -> None:
        """Run gauge ``collect`` callbacks (done automatically at every scrape)."""
        for inst in list(self._instruments.values()):
            if isinstance(inst, _Gauge):
                inst.refresh()

    def serialize(self) -> str:
        """The Prometheus text exposition of every metric."""
        return self._pc.generate_latest(self.registry).decode("utf-8")

    def asgi_app(self) -> Callable[..., Any]:
        """An ASGI app serving :meth:`serialize` (mount it at ``/metrics``)."""
        app: Callable[..., Any] = self._pc.make_asgi_app(self.registry)
        return app


class _Refresher:
    """A collector registered first so gauge callbacks run before the registry renders."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        self._metrics.refresh()
        return iter(())
