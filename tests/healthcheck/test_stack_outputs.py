"""The stack's outputs from `pulumi stack output --json`, for the commands that find the stack: a Pulumi that
answers, one with no stack selected, one that hangs, one that prints what is not an object."""

from __future__ import annotations

from pathlib import Path

import pytest

from healthcheck.errors import UsageError
from healthcheck.stack_outputs import stack_outputs


def fake_pulumi(folder: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pulumi = folder / "pulumi"
    pulumi.write_text(f"#!/bin/sh\n{script}\n")
    pulumi.chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))


def test_the_selected_stacks_outputs_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_pulumi(tmp_path, """echo '{"stack": "dev", "bucket_name": "b"}'""", monkeypatch)

    assert stack_outputs(instead="pass --stack NAME") == {"stack": "dev", "bucket_name": "b"}


@pytest.mark.parametrize(
    "script", ["echo 'error: no stack selected' >&2; exit 255", "echo '[1, 2]'", "echo 'not json'"]
)
def test_no_stack_or_no_object_gives_none(script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_pulumi(tmp_path, script, monkeypatch)

    assert stack_outputs(instead="pass --stack NAME") is None


def test_without_pulumi_on_path_there_are_no_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    assert stack_outputs(instead="pass --stack NAME") is None


def test_a_pulumi_that_hangs_is_cut_off_and_says_what_to_pass_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_pulumi(tmp_path, "exec /bin/sleep 30", monkeypatch)

    with pytest.raises(UsageError, match=r"did not answer in 0\.5 s: pass --bucket"):
        stack_outputs(instead="pass --bucket", timeout=0.5)


def test_a_named_stack_is_asked_for_and_a_hang_then_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_pulumi(tmp_path, 'echo "$@" > "${0%/*}/asked"; exec /bin/sleep 30', monkeypatch)

    assert stack_outputs(instead=None, stack="dev", timeout=0.5) is None
    assert (tmp_path / "asked").read_text().split() == [
        "stack",
        "output",
        "--json",
        "--non-interactive",
        "--stack",
        "dev",
    ]
