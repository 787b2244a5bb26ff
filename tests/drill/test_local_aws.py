"""The drill's AWS stand-in: the guestfwd relay, the stack's user data for the VM, moto's bucket, bundle and inbox."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from drill import local_aws
from drill.local_aws import BUCKET, LocalAws
from infra import bundle
from infra.user_data import environment


def run_relay(port: int) -> tuple[socket.socket, subprocess.Popen[bytes]]:
    """The relay as qemu runs it: one end of a socket pair as its stdin, stdout and stderr."""
    guest, qemu_side = socket.socketpair()
    process = subprocess.Popen(
        [sys.executable, "-m", "drill.relay", str(port)],
        stdin=qemu_side,
        stdout=qemu_side,
        stderr=qemu_side,
    )
    qemu_side.close()
    guest.settimeout(30)
    return guest, process


def receive_all(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_the_relay_carries_a_request_whose_end_is_a_half_close_and_the_whole_answer() -> None:
    # A server that answers only once the request has ended (as an HTTP/1.0 body without length does).
    server = socket.create_server(("127.0.0.1", 0))
    answer = b"x" * 300_000  # larger than any one read

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            request = receive_all(connection)
            connection.sendall(request.upper() + answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    guest, process = run_relay(server.getsockname()[1])
    guest.sendall(b"put this")
    guest.shutdown(socket.SHUT_WR)

    assert receive_all(guest) == b"PUT THIS" + answer
    assert process.wait(timeout=30) == 0
    server.close()


def test_the_relay_closes_the_guest_connection_when_nothing_listens() -> None:
    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    holder.close()
    guest, process = run_relay(port)

    assert process.wait(timeout=30) == 1
    assert receive_all(guest) == b""  # nothing written to the guest, not even an error


def test_the_vms_user_data_is_the_stacks_plus_the_instance_id() -> None:
    text = local_aws.stack_user_data("bkt", "eu-west-1", "0123456789abcdef", "arn:aws:sns:eu-west-1:1:t", "i-01")

    assert text.startswith("#cloud-config\n")
    document = yaml.safe_load(text)
    (env,) = document["write_files"]
    assert env["path"] == "/etc/trainguard/env"
    assert env["content"] == environment("bkt", "", "eu-west-1", "arn:aws:sns:eu-west-1:1:t") + (
        "TRAINGUARD_INSTANCE_ID=i-01\n"
    )
    assert document["runcmd"] == [["sh", "-c", bundle.fetch_and_apply("0123456789abcdef")]]


@pytest.fixture
def aws() -> Iterator[LocalAws]:
    with LocalAws() as started:
        yield started


def test_the_bundle_is_where_the_user_data_fetches_it_and_emails_reach_the_inbox(aws: LocalAws) -> None:
    published = aws.publish_bundle()

    assert published.key == bundle.object_key(published.version)
    assert aws.object(published.key) == bundle.archive(bundle.bundle_files())
    assert aws.object("nothing/here") is None
    aws.client("sns").publish(TopicArn=aws.topic_arn, Subject="trainguard: worker 1 killed", Message="body")
    assert aws.emails(wait_s=5) == [("trainguard: worker 1 killed", "body")]
    assert aws.emails() == []


@pytest.mark.skipif(not shutil.which("aws"), reason="no AWS CLI on PATH")
def test_the_guests_aws_command_reaches_moto_without_aws_endpoint_url(aws: LocalAws, tmp_path: Path) -> None:
    wrapper = tmp_path / "aws"
    text = local_aws.aws_wrapper(aws.endpoint).replace("/usr/bin/aws", str(shutil.which("aws")))
    wrapper.write_text(text)
    wrapper.chmod(0o755)
    result = tmp_path / "result.txt"
    result.write_text("epoch 3\n")
    # No keys, no endpoint, no config of our own: the wrapper alone must get the call to moto.
    environment_without_keys = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    environment_without_keys["HOME"] = str(tmp_path)

    done = subprocess.run(
        [str(wrapper), "s3", "cp", "--region", aws.region, str(result), f"s3://{BUCKET}/i-01/result.txt"],
        env=environment_without_keys,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert aws.object("i-01/result.txt") == b"epoch 3\n"
