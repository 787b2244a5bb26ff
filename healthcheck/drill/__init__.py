"""The drill: the incident reproduced, in a local VM (`make drill`) or on a deployed instance (`drill i-...`).

The VM harness (image, seed, qemu, timeline probe, scenarios) runs on the
developer's machine and in CI, never on the instances; it uses the standard
library only. The AWS drill imports boto3 only when it runs.
"""
