"""Metrics over prometheus_client: naming, validation, cardinality cap, exposition, ASGI."""

from __future__ import annotations

import pytest

from uwsx import InvalidNameError
from uwsx.metrics import NULL_METRICS, Gauge, Metrics


def test_prefix_and_exposition() -> None:
    m = Metrics(prefix="app_")
    m.counter("requests_total", "Requests").inc()
    m.counter("errors_total", "Errors")
    text = m.serialize()
    assert "# TYPE app_requests_total counter" in text
    assert "app_requests_total 1.0" in text
    assert "app_errors_total 0.0" in text


def test_labeled_counter_and_escaping() -> None:
    m = Metrics()
    c = m.counter("http_requests_total", "Requests", ("method",))
    c.inc(method="GET")
    c.inc(method="GET")
    m.counter("paths_total", "Paths", ("path",)).inc(path='hello "world"')
    text = m.serialize()
    assert 'http_requests_total{method="GET"} 2.0' in text
    assert r'paths_total{path="hello \"world\""} 1.0' in text


def test_same_name_same_type_returns_existing_other_type_raises() -> None:
    m = Metrics()
    assert m.counter("x_total", "X") is m.counter("x_total", "other help")
    with pytest.raises(ValueError, match="different type"):
        m.gauge("x_total", "X")


@pytest.mark.parametrize("name", ["bad name", "123start", "has-dash", "has.dot", ""])
def test_invalid_metric_names(name: str) -> None:
    with pytest.raises(InvalidNameError):
        Metrics().counter(name, "help")


@pytest.mark.parametrize("name", ["_x", "with:colon", "UPPERCASE", "mix_123"])
def test_valid_metric_names(name: str) -> None:
    Metrics().counter(name, "help")


@pytest.mark.parametrize("labels", [("bad-label",), ("__reserved",), ("a", "a")])
def test_invalid_label_names(labels: tuple[str, ...]) -> None:
    with pytest.raises(InvalidNameError):
        Metrics().counter("c_total", "help", labels)


def test_label_mismatch_and_bad_values_raise() -> None:
    m = Metrics()
    c = m.counter("c_total", "help", ("topic",))
    with pytest.raises(ValueError, match="missing label"):
        c.inc()
    with pytest.raises(ValueError, match="unexpected label"):
        c.inc(topic="a", other="b")
    with pytest.raises(ValueError, match="must not be negative"):
        c.inc(-1, topic="a")
    with pytest.raises(ValueError, match="finite"):
        m.gauge("g", "help").set(float("nan"))
    with pytest.raises(ValueError, match="finite"):
        m.histogram("h", "help", buckets=(1, float("inf")))


def test_histogram_buckets_are_sorted_and_deduplicated() -> None:
    m = Metrics()
    h = m.histogram("latency_ms", "Latency", buckets=(10, 1, 5, 5))
    h.observe(3)
    text = m.serialize()
    assert 'latency_ms_bucket{le="1.0"} 0.0' in text
    assert 'latency_ms_bucket{le="5.0"} 1.0' in text
    assert "latency_ms_count 1.0" in text


def test_gauge_collect_runs_at_scrape_and_clears_stale_series() -> None:
    m = Metrics()
    g = m.gauge("online", "Online", ("topic",))
    current = {"a": 1.0, "b": 2.0}

    def fill(gauge: Gauge) -> None:
        for t, v in current.items():
            gauge.set(v, topic=t)

    g.collect(fill)
    assert 'online{topic="b"} 2.0' in m.serialize()
    current = {"a": 3.0}
    text = m.serialize()
    assert 'online{topic="a"} 3.0' in text
    assert 'topic="b"' not in text


def test_max_series_drops_and_counts() -> None:
    m = Metrics(max_series=2)
    c = m.counter("per_topic_total", "help", ("topic",))
    for t in ("a", "b", "c", "d"):
        c.inc(topic=t)
    c.inc(topic="a")
    text = m.serialize()
    assert 'per_topic_total{topic="a"} 2.0' in text
    assert 'topic="c"' not in text
    assert 'prometheus_series_dropped_total{metric="per_topic_total"} 2.0' in text


def test_map_topic_bounds_cardinality() -> None:
    m = Metrics(map_topic=lambda t: t.split(":")[0])
    assert m.map_topic("room:42") == "room"
    with pytest.raises(TypeError):
        Metrics(map_topic="nope")  # type: ignore[arg-type]


def test_null_metrics_do_nothing() -> None:
    c = NULL_METRICS.counter("anything at all", "no validation, no work")
    c.inc(5, topic="x")
    NULL_METRICS.gauge("g", "h").set(1)
    NULL_METRICS.histogram("h", "h").observe(1)
    assert NULL_METRICS.map_topic("t") == "t"


async def test_asgi_app_serves_exposition() -> None:
    import httpx

    m = Metrics()
    m.counter("served_total", "help").inc()
    transport = httpx.ASGITransport(app=m.asgi_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert "served_total 1.0" in response.text
