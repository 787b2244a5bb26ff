"""Recovering a hung instance safely: the decision (policy), the sequence (actions), the email (report).

Shared by the auto-reboot Lambda and `trainguard reboot`. Nothing
here imports paramiko, and boto3 is imported only when a client is first used.
"""
