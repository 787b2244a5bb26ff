"""The guard: what runs ON the training instance to keep training from freezing it.

Standard library only, Python 3.10 (the Deep Learning AMI's system python3):
`trainguard launch` (launch.py), the OOM-kill notifier (notify.py), the PSI
publisher (psi.py) and the slice setup (setup.py). The decisions are pure
(fit.py, units.py, readings.py); host.py is the one edge that runs commands
and reads files.
"""
