"""The detection budget and the monitoring cost: pure arithmetic, table-tested, with its refusals."""

from __future__ import annotations

import pytest

from infra.detection import Detection, detection_budget, detection_problems
from infra.pricing import PRICES_USD, monitoring_cost_usd_month
from infra.settings import ConfigError, validate

MINIMAL = {"alertEmails": ["a@example.com"], "sshAllowedCidrs": ["10.0.0.0/8"], "keyName": "k"}


@pytest.mark.parametrize(
    ("detection", "expected"),
    [
        # interval + (n - 1) x interval + interval / 2 + 20 + 5
        (
            Detection(10, 60, 3),
            {"userspace_freeze": 90, "agent_silent": 305, "instance_status": 305, "system_status": 245},
        ),
        (
            Detection(10, 30, 1),
            {"userspace_freeze": 60, "agent_silent": 185, "instance_status": 305, "system_status": 245},
        ),
        (
            Detection(20, 120, 5),
            {"userspace_freeze": 155, "agent_silent": 425, "instance_status": 305, "system_status": 245},
        ),
        (
            Detection(60, 540, 3),
            {"userspace_freeze": 595, "agent_silent": 305, "instance_status": 305, "system_status": 245},
        ),
    ],
)
def test_budget_per_path(detection: Detection, expected: dict[str, int]) -> None:
    assert detection_budget(detection) == expected


def test_defaults_catch_the_incident_within_two_minutes() -> None:
    assert detection_budget(validate(MINIMAL).detection)["userspace_freeze"] <= 120


@pytest.mark.parametrize(
    ("detection", "key", "fragment"),
    [
        (Detection(15, 60, 3), "canaryIntervalSeconds", "use 10, 20, 30 or 60"),
        (Detection(10, 65, 3), "sshUnresponsiveSeconds", "multiple of 10"),
        (Detection(10, 10, 3), "sshUnresponsiveSeconds", "2 to 60 canary intervals"),
        (Detection(60, 600, 3), "sshUnresponsiveSeconds", "rebooted only after 655s, past the 600s limit"),
    ],
)
def test_refusals_name_the_key(detection: Detection, key: str, fragment: str) -> None:
    (problem,) = detection_problems(detection)

    assert problem[0] == key
    assert fragment in problem[2] + problem[3]


def test_config_that_pushes_the_freeze_budget_past_600s_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        validate(MINIMAL | {"canaryIntervalSeconds": "60", "sshUnresponsiveSeconds": "900"})

    assert "trainguard:sshUnresponsiveSeconds = 900" in str(caught.value)
    assert "past the 600s limit" in str(caught.value)


def test_cost_for_one_gpu_instance_and_how_it_grows() -> None:
    one = monitoring_cost_usd_month(1, 1, Detection())
    ten = monitoring_cost_usd_month(10, 1, Detection())
    slower_canary = monitoring_cost_usd_month(1, 1, Detection(60, 360, 3))

    # 7 standard + 1 high-resolution alarm, 11 + 5 metrics, requests, canary Lambda, 2 endpoints, dashboard.
    assert one == pytest.approx(30.95, abs=0.01)
    per_instance = (ten - one) / 9
    assert per_instance == pytest.approx(7 * 0.10 + 0.30 + 16 * 0.30 + 43.8 * 0.01, abs=0.01)
    assert slower_canary < one  # fewer PutMetricData requests from the canary


def test_prices_live_in_one_table() -> None:
    assert set(PRICES_USD) == {
        "standard_alarm_month",
        "high_resolution_alarm_month",
        "custom_metric_month",
        "put_metric_data_per_1000_requests",
        "lambda_arm64_gb_second",
        "lambda_per_million_requests",
        "interface_endpoint_hour",
        "dashboard_month",
    }
