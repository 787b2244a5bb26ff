"""The CloudWatch agent's configuration, as a pure function of where the data disk is and whether a GPU is.

Every metric carries the dimension InstanceId (`append_dimensions`) and no host
name (`omit_hostname`). Disks also carry path and fstype, so they are rolled up
by (InstanceId, path), the set the disk alarms select; no other roll-up is
published, since each is a metric AWS bills. Only what an alarm or the
dashboard uses is collected: memory (the memory and heartbeat alarms), disk
use, memory pressure through StatsD (the pressure alarm; StatsD metrics also
carry metric_type), and the GPU's utilisation and memory (the dashboard). The GPU metrics
carry index and name (and host, omitted), per the agent's documentation
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch-Agent-NVIDIA-GPU.html),
and, with the drivers of the last years, arch too: the agent's nvidia_smi input (Telegraf's) tags each GPU
with its product architecture when nvidia-smi's XML names one
(https://github.com/influxdata/telegraf/blob/master/plugins/inputs/nvidia_smi/schema_v12/parser.go).
"""

from __future__ import annotations

from typing import Any

from healthcheck import contract
from healthcheck.guard.psi import AGENT_STATSD_SECTION

COLLECTION_INTERVAL_S = 60
DISK_PATHS = ("/", contract.DATA_MOUNT)
# What the disk alarms select on; the agent publishes this roll-up.
DISK_DIMENSIONS = (contract.INSTANCE_DIMENSION, "path")
GPU_MEASUREMENTS = ("utilization_gpu", "memory_used")


def agent_config(gpu: bool) -> dict[str, Any]:
    """The agent's JSON config. `gpu` adds nvidia_gpu, which only an instance with nvidia-smi may have:

    the agent refuses to start when nvidia_gpu is configured without it, and
    then every metric, the memory alarm's included, is lost. The user data
    therefore picks the GPU variant on the instance, after looking.
    """
    collected: dict[str, Any] = {
        "mem": {"measurement": [contract.MEMORY_METRIC], "metrics_collection_interval": COLLECTION_INTERVAL_S},
        "disk": {
            "measurement": ["used_percent"],
            "resources": list(DISK_PATHS),
            "drop_device": True,
            "metrics_collection_interval": COLLECTION_INTERVAL_S,
        },
        # trainguard-psi.service sends memory pressure here every 10 s (the agent has no PSI input).
        "statsd": dict(AGENT_STATSD_SECTION),
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
            "namespace": contract.AGENT_NAMESPACE,
            "append_dimensions": {contract.INSTANCE_DIMENSION: "${aws:InstanceId}"},
            "aggregation_dimensions": [list(DISK_DIMENSIONS)],
            "metrics_collected": collected,
        },
    }
