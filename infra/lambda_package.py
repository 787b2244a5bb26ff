"""What goes into the Lambda zip: the healthcheck package's own modules, nothing else.

boto3 comes from the Lambda runtime; paramiko is never imported by the
handlers, so it is not needed there (a test imports the handlers from the
built zip in an interpreter without it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

RUNTIME = "python3.12"
ARCHITECTURE = "arm64"
AUTO_REBOOT_HANDLER = "healthcheck.lambdas.auto_reboot.handler"


def package_files() -> dict[str, Path]:
    """Archive name -> source file, for every module of the healthcheck package."""
    spec = importlib.util.find_spec("healthcheck")
    if spec is None or spec.origin is None:
        raise RuntimeError("the healthcheck package is not importable: run `make test` to install it")
    root = Path(spec.origin).parent
    return {f"healthcheck/{path.relative_to(root).as_posix()}": path for path in sorted(root.rglob("*.py"))}
