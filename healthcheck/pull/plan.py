"""What a pull downloads: the bucket's listing diffed against the manifest kept in DEST (pure).

An object is unchanged when the manifest holds its size and ETag and the local
file still has that size. Modification times are never compared: `aws s3
sync` misses changes when it compares them.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

MANIFEST_NAME = ".trainguard-pull.json"
MANIFEST_VERSION = 1
# A push never uploads these (they are files still being written); a pull never mirrors them.
TEMPORARY_SUFFIXES = (".part", ".tmp")


@dataclass(frozen=True)
class RemoteObject:
    key: str
    size: int
    etag: str
    modified: float  # seconds since the epoch, given to the local copy


@dataclass(frozen=True)
class Recorded:
    """What the manifest remembers of an object it downloaded."""

    size: int
    etag: str


class Change(enum.Enum):
    NEW = "new"
    UPDATED = "updated"


@dataclass(frozen=True)
class Download:
    remote: RemoteObject
    change: Change


@dataclass(frozen=True)
class PullPlan:
    downloads: tuple[Download, ...]
    unchanged: tuple[RemoteObject, ...]
    skipped: tuple[str, ...] = field(default=())  # keys that are no file to mirror (folder markers, unsafe names)

    @property
    def bytes_to_download(self) -> int:
        return sum(download.remote.size for download in self.downloads)


def unsafe_key_reason(key: str) -> str | None:
    """Why a key cannot become a path under DEST, or None: a hostile key must not write outside DEST."""
    parts = key.split("/")
    if key.endswith("/"):
        return "a folder marker"
    if any(part in ("", ".", "..") for part in parts) or "\0" in key or "\\" in key:
        return "not a plain relative path"
    if key.endswith(TEMPORARY_SUFFIXES):
        return "a temporary file"
    return None


def plan(
    remote: Iterable[RemoteObject],
    manifest: Mapping[str, Recorded],
    local_size: Callable[[str], int | None],
) -> PullPlan:
    """Sort every remote object into download (new or updated), unchanged or skipped.

    `local_size(key)` gives the size of the local copy, or None when there is
    none. A key's local path is the key itself, relative to DEST.
    """
    downloads: list[Download] = []
    unchanged: list[RemoteObject] = []
    skipped: list[str] = []
    for item in remote:
        if unsafe_key_reason(item.key) is not None:
            skipped.append(item.key)
            continue
        recorded = manifest.get(item.key)
        size_here = local_size(item.key)
        if recorded is None or size_here is None:
            downloads.append(Download(item, Change.NEW))
        elif recorded == Recorded(item.size, item.etag) and size_here == item.size:
            unchanged.append(item)
        else:
            downloads.append(Download(item, Change.UPDATED))
    return PullPlan(tuple(downloads), tuple(unchanged), tuple(skipped))


def load_manifest(text: str) -> dict[str, Recorded]:
    """The manifest's entries; an unreadable or foreign manifest counts as empty (everything is fetched again)."""
    try:
        document = json.loads(text)
        if document.get("version") != MANIFEST_VERSION:
            return {}
        return {key: Recorded(int(entry["size"]), str(entry["etag"])) for key, entry in document["objects"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


def dump_manifest(entries: Mapping[str, Recorded]) -> str:
    objects = {key: {"size": entries[key].size, "etag": entries[key].etag} for key in sorted(entries)}
    return json.dumps({"version": MANIFEST_VERSION, "objects": objects}, indent=0) + "\n"
