"""The simulator's fault plan: deterministic failures first, then seeded random ones, never a half-applied plan."""

from __future__ import annotations

from collections import Counter

import pytest

from sim.kleer.faults import BadFaultPlan, FaultPlan, RequestLog


def test_fail_next_answers_each_status_once_in_order_then_stops() -> None:
    plan = FaultPlan()
    plan.update({"fail-next": [503, 429]})
    assert [plan.decide("/company/1/client").status for _ in range(3)] == [503, 429, None]


def test_force_429_answers_the_next_n_requests() -> None:
    plan = FaultPlan()
    plan.update({"force-429": 2})
    assert [plan.decide("/x").status for _ in range(3)] == [429, 429, None]


def test_error_rates_follow_their_chances_reproducibly() -> None:
    plan = FaultPlan()
    plan.update({"error-rates": {"503": 0.2, "500": 0.1}, "drop-rate": 0.05, "seed": 3})
    verdicts = [plan.decide("/x") for _ in range(4000)]
    statuses = Counter(v.status for v in verdicts)
    assert 650 < statuses[503] < 950 and 300 < statuses[500] < 500
    assert 120 < sum(v.drop for v in verdicts) < 280
    again = FaultPlan()
    again.update({"error-rates": {"503": 0.2, "500": 0.1}, "drop-rate": 0.05, "seed": 3})
    assert [again.decide("/x") for _ in range(4000)] == verdicts


def test_path_prefix_limits_the_faults() -> None:
    plan = FaultPlan()
    plan.update({"error-rates": {"503": 1.0}, "path-prefix": "/company/1/client/invoice"})
    assert plan.decide("/company/1/client/invoice").status == 503
    assert plan.decide("/company/1/client").status is None


@pytest.mark.parametrize(
    ("distribution", "low", "high"), [("fixed", 0.02, 0.02), ("uniform", 0.01, 0.03), ("exponential", 0.0, 0.05)]
)
def test_latency_distributions(distribution: str, low: float, high: float) -> None:
    plan = FaultPlan()
    plan.update({"latency": {"distribution": distribution, "ms": 10 if distribution != "fixed" else 20,
                             "max-ms": 30 if distribution == "uniform" else 50}, "seed": 1})
    delays = [plan.decide("/x").delay for _ in range(200)]
    assert all(low <= d <= high for d in delays)


@pytest.mark.parametrize(
    "changes",
    [
        {"error-rates": {"200": 0.5}},
        {"error-rates": {"503": 1.5}},
        {"error-rates": {"503": 0.6, "500": 0.6}},
        {"latency": {"distribution": "gaussian"}},
        {"latency": {"distribution": "uniform", "ms": 50, "max-ms": 10}},
        {"fail-next": 503},
        {"force-429": -1},
        {"retry-after": "soon"},
        {"colour": "red"},
        [],
    ],
)
def test_an_impossible_plan_is_refused_and_changes_nothing(changes: object) -> None:
    plan = FaultPlan()
    plan.update({"error-rates": {"503": 0.1}})
    before = plan.describe()
    with pytest.raises(BadFaultPlan):
        plan.update(changes)
    assert plan.describe() == before


def test_updates_merge_into_the_plan() -> None:
    plan = FaultPlan()
    plan.update({"error-rates": {"503": 0.1}})
    plan.update({"retry-after": 0.5})
    assert plan.describe()["error-rates"] == {"503": 0.1} and plan.retry_after == 0.5


def test_request_log_counts_by_method_endpoint_and_status() -> None:
    log = RequestLog()
    for status in (200, 200, 503):
        log.begin()
        log.record("GET", "/v1/company/{company-id}/client", "/v1/company/1/client", status, 0.001)
    assert log.count(status=200) == 2 and log.count("GET", status=503) == 1 and log.count("PUT") == 0
    summary = log.describe(recent=2)
    assert summary["by-endpoint"] == {"GET /v1/company/{company-id}/client": {"200": 2, "503": 1}}
    assert len(summary["recent"]) == 2 and summary["in-flight"] == 0 and summary["max-in-flight"] == 1
