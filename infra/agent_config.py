"""The CloudWatch agent's configuration, as a pure function of where the data disk is and whether a GPU is.

Every metric carries the dimension InstanceId and, for disks, path, and nothing
else that an alarm would have to guess (no host name, device or filesystem
type): `omit_hostname`, and `aggregation_dimensions` publish exactly those sets.
"""

from __future__ import annotations

from typing import Any

NAMESPACE = "CWAgent"
DATA_MOUNT = "/data"
COLLECTION_INTERVAL_S = 60
DISK_PATHS = ("/", DATA_MOUNT)
# What the alarms and the dashboard select on; the agent publishes these sets.
INSTANCE_DIMENSIONS = ("InstanceId",)
DISK_DIMENSIONS = ("InstanceId", "path")
GPU_MEASUREMENTS = ("utilization_gpu", "utilization_memory", "memory_used", "memory_total", "temperature_gpu")


def agent_config(gpu: bool) -> dict[str, Any]:
    """The agent's JSON config. `gpu` adds nvidia_gpu, which only an instance with nvidia-smi may have:

    the agent refuses to start when nvidia_gpu is configured without it, and
    then every metric, the memory alarm's included, is lost. The user data
    therefore picks the GPU variant on the instance, after looking.
    """
    collected: dict[str, Any] = {
        "mem": {"measurement": ["mem_used_percent"], "metrics_collection_interval": COLLECTION_INTERVAL_S},
        "swap": {"measurement": ["swap_used_percent"], "metrics_collection_interval": COLLECTION_INTERVAL_S},
        "disk": {
            "measurement": ["used_percent"],
            "resources": list(DISK_PATHS),
            "drop_device": True,
            "metrics_collection_interval": COLLECTION_INTERVAL_S,
        },
        "procstat": [
            {
                "exe": "sshd",
                "measurement": ["pid_count", "cpu_usage", "memory_rss"],
                "metrics_collection_interval": COLLECTION_INTERVAL_S,
            }
        ],
    }
    if gpu:
        collected["nvidia_gpu"] = {
            "measurement": list(GPU_MEASUREMENTS),
            "metrics_collection_interval": COLLECTION_INTERVAL_S,
        }
    return {
        "agent": {
            "metrics_collection_interval": COLLECTION_INTERVAL_S,
            "omit_hostname": True,
            "run_as_user": "root",
        },
        "metrics": {
            "namespace": NAMESPACE,
            "append_dimensions": {"InstanceId": "${aws:InstanceId}"},
            "aggregation_dimensions": [list(INSTANCE_DIMENSIONS), list(DISK_DIMENSIONS)],
            "metrics_collected": collected,
        },
    }
