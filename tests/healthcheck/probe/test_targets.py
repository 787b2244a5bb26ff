"""Targets from the command line and ~/.ssh/config, with OpenSSH's precedence."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest

from healthcheck.errors import UsageError
from healthcheck.probe.targets import TargetDefaults, load_ssh_config, parse_target

NO_DEFAULTS = TargetDefaults()


@pytest.mark.parametrize(
    ("spec", "user", "host", "port"),
    [
        ("gpu-box", getpass.getuser(), "gpu-box", 22),
        ("alice@gpu-box", "alice", "gpu-box", 22),
        ("alice@10.0.0.5:2222", "alice", "10.0.0.5", 2222),
        ("[::1]:2200", getpass.getuser(), "::1", 2200),
        ("bob@[fe80::1]", "bob", "fe80::1", 22),
        ("::1", getpass.getuser(), "::1", 22),
        ("i-0123456789abcdef0", "ubuntu", "i-0123456789abcdef0", 22),
    ],
)
def test_target_forms(spec: str, user: str, host: str, port: int) -> None:
    target = parse_target(spec, NO_DEFAULTS, None)

    assert (target.user, target.host, target.port) == (user, host, port)


def test_labels_bracket_ipv6_and_name_the_instance() -> None:
    assert parse_target("[::1]:2200", TargetDefaults(user="u"), None).label == "u@[::1]:2200"
    instance = parse_target("i-0123456789abcdef0", NO_DEFAULTS, None)
    assert (instance.label, instance.instance_id) == ("ubuntu@i-0123456789abcdef0:22", "i-0123456789abcdef0")


def test_the_target_beats_options_which_beat_ssh_config(tmp_path: Path) -> None:
    config_file = tmp_path / "config"
    config_file.write_text(
        "Host trainer\n  HostName 127.0.0.5\n  User config-user\n  Port 2022\n  IdentityFile ~/.ssh/trainer_key\n"
    )
    config = load_ssh_config(str(config_file))

    from_config = parse_target("trainer", NO_DEFAULTS, config)
    from_options = parse_target("trainer", TargetDefaults(user="opt", port=2200, identity_files=("k",)), config)
    from_target = parse_target("me@trainer:2300", TargetDefaults(user="opt", port=2200), config)

    assert (from_config.host, from_config.user, from_config.port) == ("127.0.0.5", "config-user", 2022)
    assert from_config.identity_files == (str(Path("~/.ssh/trainer_key").expanduser()),)
    assert (from_options.user, from_options.port, from_options.identity_files) == ("opt", 2200, ("k",))
    assert (from_target.user, from_target.port) == ("me", 2300)


def test_ssh_config_can_name_the_user_for_instances(tmp_path: Path) -> None:
    config_file = tmp_path / "config"
    config_file.write_text("Host i-*\n  User ec2-user\n")

    target = parse_target("i-0123456789abcdef0", NO_DEFAULTS, load_ssh_config(str(config_file)))

    assert (target.user, target.host) == ("ec2-user", "i-0123456789abcdef0")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("host:0", "bad port '0'"),
        ("host:65536", "bad port '65536'"),
        ("host:ssh", "bad port 'ssh'"),
        ("@host", "empty user name"),
        ("user@", "no host"),
        ("[::1", "IPv6"),
    ],
)
def test_bad_targets_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[")):
        parse_target(spec, NO_DEFAULTS, None)


def test_proxyjump_is_refused_with_a_way_out(tmp_path: Path) -> None:
    config_file = tmp_path / "config"
    config_file.write_text("Host behind\n  ProxyJump bastion\n")

    with pytest.raises(UsageError, match="ProxyJump"):
        parse_target("behind", NO_DEFAULTS, load_ssh_config(str(config_file)))


def test_a_missing_default_ssh_config_is_fine_a_missing_named_one_is_not(tmp_path: Path) -> None:
    assert load_ssh_config(None) is None
    with pytest.raises(UsageError, match="does not exist"):
        load_ssh_config(str(tmp_path / "nope"))
