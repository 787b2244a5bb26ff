"""The reboot decision, every branch, as a pure function of facts, history, time and settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from healthcheck.remediation.policy import (
    HISTORY_TAG,
    Action,
    Entry,
    InstanceFacts,
    RemediationConfigError,
    RemediationSettings,
    Verdict,
    decide,
    decode_history,
    encode_history,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SETTINGS = RemediationSettings()
MANAGED = {"trainguard:managed": "true"}


def facts(
    *entries: Entry,
    state: str = "running",
    launched_ago: timedelta = timedelta(days=1),
    tags: dict[str, str] | None = None,
    instance_store: bool = False,
) -> InstanceFacts:
    all_tags = dict(MANAGED if tags is None else tags)
    if entries:
        all_tags[HISTORY_TAG] = encode_history(entries)
    return InstanceFacts("i-0123456789abcdef0", state, NOW - launched_ago, all_tags, instance_store)


def entry(ago: timedelta, action: Action = Action.REBOOT, fingerprint: str = "00000000") -> Entry:
    return Entry(NOW - ago, action, fingerprint)


@pytest.mark.parametrize(
    ("instance", "verdict"),
    [
        (facts(tags={}), Verdict.SKIP_NOT_MANAGED),
        (facts(tags={"trainguard:managed": "false"}), Verdict.SKIP_NOT_MANAGED),
        (facts(state="stopped"), Verdict.SKIP_NOT_RUNNING),
        (facts(state="pending"), Verdict.SKIP_NOT_RUNNING),
        (facts(launched_ago=timedelta(minutes=3)), Verdict.SKIP_BOOT_GRACE),
        (facts(entry(timedelta(minutes=5))), Verdict.SKIP_BOOT_GRACE),
        (facts(entry(timedelta(minutes=5), Action.STARTED)), Verdict.SKIP_BOOT_GRACE),
        (facts(entry(timedelta(hours=2), fingerprint="feedbeef")), Verdict.SKIP_DUPLICATE),
        (facts(), Verdict.REBOOT),
        (facts(entry(timedelta(hours=7))), Verdict.REBOOT),  # outside the window: a new episode
        (facts(entry(timedelta(minutes=30))), Verdict.STOP_START),
        (facts(entry(timedelta(minutes=30)), instance_store=True), Verdict.REBOOT),
        (facts(*(entry(timedelta(hours=h)) for h in (1, 2, 3))), Verdict.GIVE_UP),
        (facts(entry(timedelta(hours=2)), entry(timedelta(hours=1), Action.GAVE_UP)), Verdict.STOP_START),
    ],
)
def test_each_branch(instance: InstanceFacts, verdict: Verdict) -> None:
    assert decide(instance, "feedbeef", NOW, SETTINGS).verdict is verdict


def test_force_lifts_the_budget_and_nothing_else() -> None:
    spent = facts(*(entry(timedelta(hours=h)) for h in (1, 2, 3)))

    assert decide(spent, "cafecafe", NOW, SETTINGS, force=True).verdict is Verdict.STOP_START
    assert decide(facts(tags={}), "cafecafe", NOW, SETTINGS, force=True).verdict is Verdict.SKIP_NOT_MANAGED
    assert decide(facts(launched_ago=timedelta(minutes=1)), "c", NOW, SETTINGS, force=True).verdict is (
        Verdict.SKIP_BOOT_GRACE
    )


def test_history_round_trips_and_keeps_the_newest_ten_within_a_tag_value() -> None:
    entries = tuple(entry(timedelta(hours=h), fingerprint=f"{h:08x}") for h in range(20, 0, -1))

    encoded = encode_history(entries)

    assert len(encoded) <= 256
    assert decode_history(encoded) == entries[-10:]
    assert decode_history("junk 12:X:zz 1764417600:R:abc") == (
        Entry(datetime.fromtimestamp(1764417600, UTC), Action.REBOOT, "abc"),
    )


def test_settings_come_from_the_environment() -> None:
    settings = RemediationSettings.from_environment(
        {
            "TRAINGUARD_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:t",
            "TRAINGUARD_BUCKET": "b",
            "TRAINGUARD_MANAGED_TAG": "team:owner=ml",
            "TRAINGUARD_MAX_REBOOTS": "5",
            "TRAINGUARD_REBOOT_WINDOW_HOURS": "12",
            "TRAINGUARD_BOOT_GRACE_SECONDS": "300",
        }
    )

    assert settings == RemediationSettings(
        topic_arn="arn:aws:sns:eu-west-1:123456789012:t",
        bucket="b",
        managed_tag=("team:owner", "ml"),
        max_reboots=5,
        reboot_window=timedelta(hours=12),
        boot_grace=timedelta(seconds=300),
    )
    assert RemediationSettings.from_environment({}) == SETTINGS


@pytest.mark.parametrize(
    ("name", "value"),
    [("TRAINGUARD_MAX_REBOOTS", "three"), ("TRAINGUARD_REBOOT_WINDOW_HOURS", "0"), ("TRAINGUARD_MANAGED_TAG", "x")],
)
def test_bad_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(RemediationConfigError, match=name):
        RemediationSettings.from_environment({name: value})
