"""The drill's VM harness: the incident reproduced in a local qemu VM (`make drill`, `make vm-test`).

It builds (once) a Debian image, boots it with the stack's own user data,
reproduces the freeze, and observes it from the host with the product's own
probe, canary and remediation code. It runs on a developer's machine and in
CI, never on an instance, and is not part of the installed package: it may
use what only the tests install (moto) and the Pulumi program (infra).
The AWS drill against a deployed instance is the product's
`trainguard drill i-...` (healthcheck.drill).
"""
