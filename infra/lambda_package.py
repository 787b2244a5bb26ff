"""What goes into the Lambda zip, and the instances' zip: the healthcheck package's own modules, nothing else.

boto3 comes from the Lambda runtime; paramiko is never imported by the
handlers, so it is not needed there (a test imports the handlers from the
built zip in an interpreter without it). The Lambdas leave out the
capabilities that run elsewhere (LAMBDA_LEAVES_OUT); the instances get the
whole package, since their `trainguard` command parses every subcommand.
"""

from __future__ import annotations

import importlib.util
import io
import zipfile
from pathlib import Path

RUNTIME = "python3.12"
ARCHITECTURE = "arm64"
AUTO_REBOOT_HANDLER = "healthcheck.lambdas.auto_reboot.handler"
# Run on a laptop, in CI or on an instance, never by a handler: kept out of the Lambdas' zip.
LAMBDA_LEAVES_OUT = ("drill", "pull", "guard", "overview")


def package_files(leave_out: tuple[str, ...] = ()) -> dict[str, Path]:
    """Archive name -> source file, for every module of the healthcheck package but the subpackages left out."""
    spec = importlib.util.find_spec("healthcheck")
    if spec is None or spec.origin is None:
        raise RuntimeError("the healthcheck package is not importable: run `make test` to install it")
    root = Path(spec.origin).parent
    return {
        f"healthcheck/{relative.as_posix()}": path
        for path in sorted(root.rglob("*.py"))
        if (relative := path.relative_to(root)).parts[0] not in leave_out
    }


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
