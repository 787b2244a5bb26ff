"""What goes into the Lambda zip: the healthcheck package's own modules, nothing else.

boto3 comes from the Lambda runtime; paramiko is never imported by the
handlers, so it is not needed there (a test imports the handlers from the
built zip in an interpreter without it).
"""

from __future__ import annotations

import importlib.util
import io
import zipfile
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


def package_zip() -> bytes:
    """The package's modules as one zip, the same bytes for the same sources (fixed dates and order).

    The on-instance bundle installs it as /opt/trainguard/healthcheck.zip, which
    the `trainguard` command puts on the system python3's path.
    """
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, source in package_files().items():
            entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, source.read_bytes())
    return packed.getvalue()
