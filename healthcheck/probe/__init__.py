"""`trainguard probe`: does a host answer SSH, and if not, why not.

targets -> stages (resolve, tcp, banner; then auth and exec over paramiko)
-> verdict -> rendering, with one deadline per target and a share of it per
stage.
"""
