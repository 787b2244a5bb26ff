"""The reboot decision, every branch, as a pure function of facts, history, time and settings."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from healthcheck import contract
from healthcheck.remediation.policy import (
    MAX_REBOOTS_LIMIT,
    Action,
    Entry,
    InstanceFacts,
    RemediationConfigError,
    RemediationSettings,
    Verdict,
    at_expression,
    claim_name,
    decide,
    decode_history,
    encode_history,
    relook_at,
    schedule_name,
    should_start,
    ssh_answers,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
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
        all_tags[contract.HISTORY_TAG_KEY] = encode_history(entries)
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


def test_history_round_trips_and_keeps_the_newest_eleven_remediations_within_a_tag_value() -> None:
    entries = tuple(entry(timedelta(hours=h), fingerprint=f"{h:08x}") for h in range(20, 0, -1))

    encoded = encode_history(entries)

    assert len(encoded) <= 256
    assert decode_history(encoded) == entries[-11:]
    assert decode_history("junk 12:X:zz 99999999999999999999:R:f -99999999999:R:f 1764417600:R:abc") == (
        Entry(datetime.fromtimestamp(1764417600, timezone.utc), Action.REBOOT, "abc"),
    )


def test_history_never_forgets_a_remediation_for_notes_however_many() -> None:
    """Gave-up and started notes must not push the window's remediations out of the ten slots."""
    remediations = tuple(entry(timedelta(minutes=m), Action.REBOOT, f"{m:08x}") for m in (300, 200, 100))
    notes = tuple(entry(timedelta(minutes=m), Action.GAVE_UP, f"{m:08x}") for m in range(99, 0, -1))
    newest = entry(timedelta(0), Action.STARTED, "ffffffff")

    kept = decode_history(encode_history((*remediations, *notes, newest)))

    assert [e for e in kept if e.action is Action.REBOOT] == list(remediations)
    assert kept[-1] == newest
    assert len(encode_history((*remediations, *notes, newest))) <= 256
    spent = facts(*kept)
    later = NOW + timedelta(minutes=11)
    assert decide(spent, "cafecafe", later, RemediationSettings(max_reboots=3)).verdict is Verdict.SKIP_GAVE_UP


@pytest.mark.parametrize("max_reboots", range(MAX_REBOOTS_LIMIT + 1))
def test_the_tag_always_holds_the_whole_budget(max_reboots: int) -> None:
    """Whatever MAX_REBOOTS allows, a full window of remediations plus any notes fits in the tag."""
    remediations = [entry(timedelta(minutes=11 * (20 - n)), Action.STOP_START, f"{n:08x}") for n in range(max_reboots)]
    mixed = [*remediations, *(entry(timedelta(seconds=n), Action.GAVE_UP, "0") for n in range(30, 0, -1))]

    kept = decode_history(encode_history(tuple(mixed)))

    assert [e for e in kept if e.action is Action.STOP_START] == remediations


def test_a_budget_the_tag_cannot_hold_is_refused() -> None:
    with pytest.raises(
        RemediationConfigError,
        match=r"TRAINGUARD_MAX_REBOOTS=.11.: expected a whole number from 0 to 10 \(the history tag counts 10",
    ):
        RemediationSettings.from_environment({"TRAINGUARD_MAX_REBOOTS": "11"})


def test_giving_up_emails_once_per_window() -> None:
    spent = [entry(timedelta(hours=h)) for h in (3, 2, 1)]

    assert decide(facts(*spent), "cafecafe", NOW, SETTINGS).verdict is Verdict.GIVE_UP
    gave_up = facts(*spent, entry(timedelta(minutes=30), Action.GAVE_UP))
    assert decide(gave_up, "cafecafe", NOW, SETTINGS).verdict is Verdict.SKIP_GAVE_UP
    assert not Verdict.SKIP_GAVE_UP.emails
    assert decide(gave_up, "cafecafe", NOW + timedelta(hours=6), SETTINGS).verdict is Verdict.REBOOT


@pytest.mark.parametrize(
    ("tags", "state", "history", "start"),
    [
        (MANAGED, "stopped", "1764417600:S:abcdef01", True),
        (MANAGED, "stopped", "1764417600:R:abcdef01", False),  # trainguard did not stop it
        (MANAGED, "running", "1764417600:S:abcdef01", False),
        ({}, "stopped", "1764417600:S:abcdef01", False),  # a forged or copied history on an unmanaged instance
        ({"trainguard:managed": "false"}, "stopped", "1764417600:S:abcdef01", False),
        ({"Name": "trainguard:managed=true"}, "stopped", "1764417600:S:abcdef01", False),
    ],
)
def test_only_a_managed_instance_trainguard_stopped_is_started(
    tags: dict[str, str], state: str, history: str, start: bool
) -> None:
    instance = InstanceFacts("i-0123456789abcdef0", state, NOW, {**tags, contract.HISTORY_TAG_KEY: history})

    assert should_start(instance, SETTINGS) is start


@pytest.mark.parametrize(
    ("samples", "answering"),
    [
        ([], False),  # no canary data: go ahead
        ([(NOW - timedelta(seconds=30), 1.0)], True),
        ([(NOW - timedelta(seconds=120), 1.0)], True),
        ([(NOW - timedelta(seconds=121), 1.0)], False),  # stale
        ([(NOW - timedelta(seconds=60), 1.0), (NOW - timedelta(seconds=10), 0.0)], False),  # latest says no
        ([(NOW - timedelta(seconds=10), 1.0), (NOW - timedelta(seconds=60), 0.0)], True),  # order does not matter
    ],
)
def test_ssh_answers_reads_the_latest_sample_within_two_minutes(
    samples: list[tuple[datetime, float]], answering: bool
) -> None:
    assert ssh_answers(samples, NOW) is answering


def test_agent_silence_while_ssh_answers_is_not_a_reboot_but_is_emailed() -> None:
    decision = decide(facts(), "cafecafe", NOW, SETTINGS, ssh_answering=True)

    assert decision.verdict is Verdict.SKIP_SSH_ANSWERS
    assert decision.verdict.emails and not decision.verdict.acts
    assert decide(facts(tags={}), "cafecafe", NOW, SETTINGS, ssh_answering=True).verdict is Verdict.SKIP_NOT_MANAGED
    booting = facts(launched_ago=timedelta(minutes=3))
    assert decide(booting, "cafecafe", NOW, SETTINGS, ssh_answering=True).verdict is Verdict.SKIP_BOOT_GRACE


def test_looks_again_when_the_grace_period_ends_after_a_skip_or_a_remediation_and_never_after_giving_up() -> None:
    settings = RemediationSettings(boot_grace=timedelta(minutes=10))
    booting = facts(launched_ago=timedelta(minutes=3))
    one_minute = timedelta(minutes=1)

    assert relook_at(booting, decide(booting, "c", NOW, settings), NOW, settings) == NOW + timedelta(minutes=8)
    rebooted = decide(facts(), "c", NOW, settings)
    assert relook_at(facts(), rebooted, NOW, settings) == NOW + timedelta(minutes=10) + one_minute
    spent = facts(*(entry(timedelta(hours=h)) for h in (1, 2, 3)))
    assert relook_at(spent, decide(spent, "c", NOW, settings), NOW, settings) is None


def test_schedule_names_fit_schedulers_rules_for_the_longest_ids_and_any_alarm_name() -> None:
    name = schedule_name("i-0123456789abcdef0", "trainguard-i-0123456789abcdef0-ssh-unresponsive\n☃" * 9, NOW)

    assert re.fullmatch(r"[0-9a-zA-Z._-]{1,64}", name)
    assert name != schedule_name("i-0123456789abcdef0", "another alarm", NOW)
    assert at_expression(NOW) == "at(2026-11-29T12:00:00)"


def test_claims_are_named_by_instance_and_history_not_by_alarm() -> None:
    first = claim_name("i-0123456789abcdef0", ())
    after = claim_name("i-0123456789abcdef0", (entry(timedelta(hours=1)),))

    assert first == "/trainguard/claims/i-0123456789abcdef0/0"
    assert after != first and after.startswith("/trainguard/claims/i-0123456789abcdef0/")
    assert (
        claim_name("i-0123456789abcdef0", (), ("1764417600",)) == "/trainguard/claims/i-0123456789abcdef0/0.1764417600"
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


def booted(ago: timedelta | None = None, text: str | None = None) -> InstanceFacts:
    """An instance launched a day ago that recorded a boot `ago` (or wrote `text` in its boot tag)."""
    value = text if text is not None else str(int((NOW - (ago or timedelta(0))).timestamp()))
    return facts(tags=MANAGED | {contract.BOOT_TAG_KEY: value})


def test_an_os_reboot_the_instance_recorded_starts_the_grace_period_again() -> None:
    """`sudo reboot` or a panic leaves LaunchTime a day old; the boot the instance recorded counts."""
    just_booted = booted(timedelta(minutes=2))

    decision = decide(just_booted, "ffffffff", NOW, SETTINGS)

    assert decision.verdict is Verdict.SKIP_BOOT_GRACE
    assert decision.reason.startswith("booted or remediated 120s ago")
    # It looks again when that grace ends, not the launch's.
    assert relook_at(just_booted, decision, NOW, SETTINGS) == NOW - timedelta(minutes=2) + timedelta(minutes=11)


@pytest.mark.parametrize(
    "instance",
    [
        booted(timedelta(hours=1)),
        booted(timedelta(minutes=-5)),  # a boot in the future: a wrong clock, or a forged tag
        booted(text="soon"),
        booted(text="-1"),
        booted(text="9" * 400),
    ],
    ids=["an-hour-ago", "in-the-future", "not-a-number", "negative", "too-long"],
)
def test_a_boot_long_ago_or_one_that_cannot_be_true_does_not_hold_the_reboot_back(instance: InstanceFacts) -> None:
    assert decide(instance, "ffffffff", NOW, SETTINGS).verdict is Verdict.REBOOT


def test_settings_name_the_evidence_retention_and_the_region_they_run_in() -> None:
    settings = RemediationSettings.from_environment(
        {"TRAINGUARD_EVIDENCE_RETAIN_DAYS": "7", "AWS_REGION": "ap-south-1"}
    )

    assert (settings.evidence_retention, settings.region) == (timedelta(days=7), "ap-south-1")
    assert settings.policy_environment()["TRAINGUARD_EVIDENCE_RETAIN_DAYS"] == "7"
