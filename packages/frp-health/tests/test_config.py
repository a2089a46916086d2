"""Configuration: URL normalisation, distinct targets, clear errors at construction."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from frp_health import HealthChecker


def test_targets_keep_scheme_host_port_and_prefix() -> None:
    checker = HealthChecker(
        [
            "HTTP://Example.COM:80/api/",
            "http://example.com:8080/api",
            "http://example.com:8080/other",
            "https://example.com:443",
            "http://[::1]:9000",
        ]
    )
    assert checker.targets == [
        "http://example.com/api",
        "http://example.com:8080/api",
        "http://example.com:8080/other",
        "https://example.com",
        "http://[::1]:9000",
    ]


def test_exact_and_normalised_strings_both_resolve() -> None:
    checker = HealthChecker(["HTTP://Example.COM:80/api/", "http://example.com:8080/api"])
    assert checker.resolve("HTTP://Example.COM:80/api/") == "http://example.com/api"
    assert checker.resolve("http://example.com/api") == "http://example.com/api"
    assert checker.resolve("http://example.com/api/users?id=1") == "http://example.com/api"
    assert checker.resolve("http://example.com:8080/api/x") == "http://example.com:8080/api"
    assert checker.resolve("http://example.com/apiary") is None
    assert checker.resolve("http://example.com:9999/api") is None
    checker.report("HTTP://Example.COM:80/api/", "success", 0.01)
    assert checker.snapshot()["http://example.com/api"].traffic_latency_ewma == 0.01


def test_longest_prefix_wins() -> None:
    checker = HealthChecker(["http://h/api", "http://h/api/v2", "http://h"])
    assert checker.resolve("http://h/api/v2/x") == "http://h/api/v2"
    assert checker.resolve("http://h/api/v1/x") == "http://h/api"
    assert checker.resolve("http://h/static/x") == "http://h"


def test_repeated_urls_collapse_into_one_target_as_in_0_4_0() -> None:
    checker = HealthChecker(["http://a", "http://b", "http://A:80/", "http://a"])
    assert checker.targets == ["http://a", "http://b"]
    assert checker.resolve("http://A:80/") == "http://a"
    same = {"host": "http://a", "maxrequests": 3}
    assert HealthChecker([same, dict(same)]).target_configs == {"http://a": same}


def test_extra_dict_keys_are_kept_for_other_components() -> None:
    config = {"host": "http://a", "maxrequests": 5, "weight": 3}
    checker = HealthChecker([config])
    assert checker.target_configs["http://a"] == config


@pytest.mark.parametrize(
    ("targets", "error", "match"),
    [
        ([], ValueError, "empty"),
        ("http://a", TypeError, "list"),
        (None, TypeError, "list"),
        (["http://a", {"host": "http://b"}], TypeError, "Mixed types at index 1|index 1"),
        ([{"host": "http://b"}, "http://a"], TypeError, "index 1"),
        ([1, 2], TypeError, "strings or a list of dictionaries"),
        (["localhost:8080"], ValueError, "did you mean 'http://localhost:8080'"),
        (["127.0.0.1:8080"], ValueError, "scheme"),
        (["ftp://a"], ValueError, "scheme"),
        (["http://"], ValueError, "no host"),
        (["http:///path"], ValueError, "no host"),
        (["http://a:99999"], ValueError, "not a valid URL"),
        (["http://user:pw@a"], ValueError, "credentials"),
        (["http://a/?x=1"], ValueError, "query"),
        (
            [{"host": "http://a"}, {"host": "http://A/", "pingpath": "/x"}],
            ValueError,
            "targets\\[1\\] and targets\\[0\\] configure the same target 'http://a'",
        ),
        ([{"pingpath": "/"}], ValueError, "missing the required 'host'"),
        ([{"host": 5}], TypeError, "str"),
        ([{"host": "http://a", "timeout": -1}], ValueError, "timeout"),
        ([{"host": "http://a", "method": "GE T"}], ValueError, "method"),
        ([{"host": "http://a", "expected_statuses": [700]}], ValueError, "status"),
        ([{"host": "http://a", "headers": {"x": 1}}], TypeError, "header"),
        ([{"host": "http://a", "maxrequests": "many"}], TypeError, "maxrequests"),
    ],
)
def test_bad_targets_fail_at_construction(targets: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        HealthChecker(targets)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"interval": -1}, ValueError, "interval must be > 0"),
        ({"interval": 0}, ValueError, "interval"),
        ({"interval": float("nan")}, ValueError, "interval"),
        ({"interval": "10"}, TypeError, "interval"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"unhealthy_threshold": 0}, ValueError, "unhealthy_threshold"),
        ({"healthy_threshold": 1.5}, TypeError, "healthy_threshold"),
        ({"healthy_threshold": True}, TypeError, "healthy_threshold"),
        ({"consecutive_failures": 0}, ValueError, "consecutive_failures"),
        ({"jitter": 1.5}, ValueError, "jitter"),
        ({"jitter": -0.1}, ValueError, "jitter"),
        ({"max_ejected_percent": 101}, ValueError, "max_ejected_percent"),
        ({"base_ejection": 0}, ValueError, "base_ejection"),
        ({"max_ejection": 10}, ValueError, "max_ejection"),
        ({"expected_statuses": []}, ValueError, "empty"),
        ({"expected_statuses": "200"}, TypeError, "iterable"),
        ({"ping_path": "http://a/health"}, ValueError, "path"),
        ({"method": ""}, ValueError, "method"),
        ({"active": "no"}, TypeError, "active"),
        ({"httpx_client": object()}, TypeError, "httpx_client"),
    ],
)
def test_bad_options_fail_at_construction(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        HealthChecker(["http://a"], **options)


def test_setters_validate() -> None:
    checker = HealthChecker(["http://a"])
    checker.interval = 2.5
    assert checker.interval == 2.5
    with pytest.raises(ValueError, match="interval"):
        checker.interval = -1
    with pytest.raises(ValueError, match="timeout"):
        checker.timeout = 0
    assert checker.timeout == 5


async def test_construction_needs_no_event_loop_or_network() -> None:
    client = httpx.AsyncClient()
    checker = HealthChecker(["http://a"], httpx_client=client)
    assert checker.httpx_client is client
    assert HealthChecker(["http://a"]).httpx_client is None  # created on first probe only
    await client.aclose()


def test_repr_tells_mode_and_health() -> None:
    assert repr(HealthChecker(["http://a", "http://b"])) == "<HealthChecker 2/2 healthy, active>"
    checker = HealthChecker(["http://a"], active=False)
    checker.report("http://a", "success")
    assert repr(checker) == "<HealthChecker 1/1 healthy, passive-only>"
