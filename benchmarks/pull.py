"""`trainguard pull` against `aws s3 sync` (AWS CLI v1), same moto S3 server, same run.

1,000 files, about 200 MB in all, sizes mixed from 1 kB to 20 MB, under one
instance prefix of a bucket in moto's server (its own process on 127.0.0.1).
Each tool syncs into an empty directory (first sync), then again with nothing
changed (no-op re-sync); the tools take turns, ROUNDS times. Interpreter start
is included for both. Besides wall time it prints each tool's CPU time (user
and system, the client process only) and how long moto itself takes to list
the 1,000 keys, which every no-op re-sync must wait for. Goals: the first sync no slower than `aws s3 sync`, the
no-op re-sync under 1 s. The data is generated under a temporary directory and
removed at the end.

`--baseline DIR` adds a third tool taking the same turns: the pull of another
checkout of this repository (an earlier commit, say), so a change is measured
against what it replaces on the same machine at the same moment.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3

ROUNDS = 3
BUCKET = "trainguard-results-bench"
INSTANCE = "i-0123456789abcdef0"
REGION = "eu-west-1"
NOOP_BUDGET_S = 1.0
AWS_V1 = Path(sys.executable).parent / "aws"
REPO = Path(__file__).resolve().parent.parent


def sizes() -> list[int]:
    """1,000 sizes, about 200 MB: a few checkpoints, some shards, many logs and metrics."""
    rng = random.Random(11)
    mix = [20_000_000] * 6 + [2_000_000] * 30 + [100_000] * 164
    mix += [rng.randint(1_000, 9_000) for _ in range(800)]
    return mix


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_moto(port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2)
            return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("moto's server did not start within 60 s")


def fill_bucket(client: object, source: Path) -> int:
    source.mkdir()
    rng = random.Random(7)
    files = []
    for number, size in enumerate(sizes()):
        path = source / f"run-{number % 10}" / f"file-{number:04d}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        files.append(path)

    def upload(path: Path) -> None:
        client.upload_file(str(path), BUCKET, f"{INSTANCE}/{path.relative_to(source).as_posix()}")  # type: ignore[attr-defined]

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(upload, files))
    return sum(path.stat().st_size for path in files)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall time and the command's CPU time, in seconds."""
    cpu_before = children_cpu()
    started = time.monotonic()
    completed = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if completed.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({completed.returncode}): {completed.stdout}{completed.stderr}")
    return seconds, children_cpu() - cpu_before


def listing_seconds(client: object) -> float:
    """The best of three ListObjectsV2 calls for the 1,000 keys, from this process: moto's own share of a no-op."""
    walls = []
    for _ in range(3):
        started = time.monotonic()
        client.list_objects_v2(Bucket=BUCKET, Prefix=f"{INSTANCE}/")  # type: ignore[attr-defined]
        walls.append(time.monotonic() - started)
    return min(walls)


def tree_size(root: Path) -> tuple[int, int]:
    files = [path for path in root.rglob("*") if path.is_file() and not path.name.startswith(".")]
    return len(files), sum(path.stat().st_size for path in files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, metavar="DIR", help="another checkout whose pull takes turns too")
    args = parser.parse_args()
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = os.environ | {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    server = start_moto(port)
    work = Path(tempfile.mkdtemp(prefix="trainguard-pull-bench-"))
    try:
        client = boto3.client(
            "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="bench", aws_secret_access_key="bench"
        )
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        total = fill_bucket(client, work / "source")
        print(f"pull benchmark: {len(sizes())} files, {total / 1e6:.0f} MB in moto's S3 server on 127.0.0.1")

        def pull(dest: Path) -> list[str]:
            return [sys.executable, "-m", "healthcheck", "pull", "--bucket", BUCKET, str(dest)]

        def sync(dest: Path) -> list[str]:
            source, target = f"s3://{BUCKET}/{INSTANCE}/", str(dest / INSTANCE)
            return [str(AWS_V1), "s3", "sync", "--only-show-errors", "--no-progress", source, target]

        # Each tool: its command and the directory it runs in (a checkout's pull is the one in its directory).
        tools = {"trainguard pull": (pull, REPO), "aws s3 sync (v1)": (sync, REPO)}
        if args.baseline:
            tools["baseline pull"] = (pull, args.baseline.resolve())
        first: dict[str, list[tuple[float, float]]] = {name: [] for name in tools}
        noop: dict[str, list[tuple[float, float]]] = {name: [] for name in tools}
        for round_number in range(ROUNDS):
            for name, (command, cwd) in tools.items():
                dest = work / f"dest-{round_number}-{name.split()[0]}"
                first[name].append(timed(command(dest), env, cwd))
                count, size = tree_size(dest)
                if (count, size) != (len(sizes()), total):
                    raise SystemExit(f"{name} got {count} files, {size} bytes, not {len(sizes())} and {total}")
                noop[name].append(timed(command(dest), env, cwd))
                shutil.rmtree(dest)
        listing = listing_seconds(client)
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)

    def spread(runs: list[tuple[float, float]]) -> str:
        walls = [wall for wall, _ in runs]
        cpu = statistics.median(cpu for _, cpu in runs)
        return f"median {statistics.median(walls):.2f} s (min {min(walls):.2f}, max {max(walls):.2f}; CPU {cpu:.2f} s)"

    for name in tools:
        print(f"  {name:<17} first sync {spread(first[name])}")
        print(f"  {'':<17} no-op      {spread(noop[name])}")
    ours_first, theirs_first = (statistics.median(wall for wall, _ in first[name]) for name in list(tools)[:2])
    ours_noop, theirs_noop = (statistics.median(wall for wall, _ in noop[name]) for name in list(tools)[:2])
    print(
        f"  ratio trainguard/aws: first sync {ours_first / theirs_first:.2f} (goal <= 1), "
        f"no-op {ours_noop / theirs_noop:.2f}; our no-op {ours_noop:.2f} s (goal < {NOOP_BUDGET_S:g} s), "
        f"of which moto's listing of the 1,000 keys {listing:.2f} s; load average {os.getloadavg()[0]:.1f}"
    )
    return 0 if ours_first <= theirs_first and ours_noop < NOOP_BUDGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
