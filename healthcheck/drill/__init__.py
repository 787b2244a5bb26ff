"""`trainguard drill i-...`: freeze sshd on a deployed instance and time trainguard's detection and recovery.

boto3 is imported only when it runs. The same incident in a local VM, with no
AWS account, is the repository's VM harness (`make drill`).
"""
