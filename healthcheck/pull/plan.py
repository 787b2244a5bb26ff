"""What a pull does: the bucket's listing against the manifest kept in DEST and what is in DEST now (pure).

An object is unchanged when the manifest holds its size and ETag and the local
copy is still the one the pull wrote. Modification times never decide whether
the bucket changed (`aws s3 sync` misses a same-size rewrite that way); they
tell whether a local file is still the pull's copy: the pull gives each copy
the object's time, and a file edited here has another.

Nothing a pull did not write is ever overwritten. When another file is where
an object belongs (a file of the user's, a copy they edited, or a folder), the
object is set aside beside it, under `NAME.from-bucket.EXT`. When DEST does not
tell two keys apart (`Run.csv` and `run.csv` on a case-insensitive disk, `café`
in NFC and in NFD on a normalization-insensitive one), the first in code-point
order keeps its name and the other lands under `NAME.twin-HASH.EXT`, a name
that follows from its key alone. The manifest remembers where each object
landed, so the next pull finds it there.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

MANIFEST_NAME = ".trainguard-pull.json"
# Version 2 records each copy's time and where it landed; version 1 recorded size and ETag only.
MANIFEST_VERSION = 2
# A push never uploads these (they are files still being written); a pull never mirrors them.
TEMPORARY_SUFFIXES = (".part", ".tmp")
# A local file whose time is this close to the one the pull gave it is still the pull's copy (FAT keeps 2 s steps).
TIME_SLACK_S = 2.0
BESIDE_TAG = "from-bucket"


@dataclass(frozen=True)
class RemoteObject:
    key: str
    size: int
    etag: str
    modified: float  # seconds since the epoch, given to the local copy


class Aside(enum.Enum):
    """Why an object is not at its key's own path in DEST."""

    TWIN = "twin"  # DEST does not tell its name from another key's (case or Unicode form)
    YOURS = "yours"  # a file the pull did not write is at its name


@dataclass(frozen=True)
class Recorded:
    """What the manifest remembers of an object it downloaded."""

    size: int
    etag: str
    modified: float | None = None  # the time given to the local copy (None: written by manifest version 1)
    path: str | None = None  # where the local copy is, when not at the key's own path
    aside: Aside | None = None

    def place(self, key: str) -> str:
        return self.path or key


@dataclass(frozen=True)
class LocalFile:
    """What is at a path in DEST: its size and time, and whether it is a regular file (else a folder, say)."""

    size: int
    modified: float
    regular: bool = True

    def is_copy(self, size: int, modified: float | None) -> bool:
        """Whether this is the copy a pull wrote of an object of that size and time (no time: size alone).

        The pull gives each copy the object's time, a whole second: a copy holds
        it to the microsecond, or, on a disk that keeps coarse times (FAT's 2 s),
        as a whole second close to it. A file written here has a time of its own.
        """
        if not (self.regular and self.size == size):
            return False
        if modified is None:
            return True
        off = abs(self.modified - modified)
        return off < 1e-6 or (off <= TIME_SLACK_S and self.modified.is_integer())


class Change(enum.Enum):
    NEW = "new"
    UPDATED = "updated"


@dataclass(frozen=True)
class Download:
    remote: RemoteObject
    change: Change
    path: str = ""  # where it lands, relative to DEST (default: the key)
    aside: Aside | None = None
    beside: str = ""  # YOURS: the path of the file it is set beside; TWIN: the key it cannot be told from
    replaces: Recorded | None = None  # the pull's copy it overwrites; None: nothing may be there

    @property
    def target(self) -> str:
        return self.path or self.remote.key

    def recorded(self) -> Recorded:
        """The manifest's entry once it has landed."""
        remote = self.remote
        path = self.target if self.target != remote.key else None
        return Recorded(remote.size, remote.etag, remote.modified, path, self.aside)


@dataclass(frozen=True)
class PullPlan:
    downloads: tuple[Download, ...]
    unchanged: tuple[RemoteObject, ...]
    skipped: tuple[str, ...] = field(default=())  # keys that are no file to mirror (folder markers, unsafe names)
    kept: tuple[str, ...] = ()  # keys whose local copy was changed here while the bucket's was not: left as it is
    adopted: tuple[tuple[str, Recorded], ...] = ()  # files already in DEST that are the object: recorded, not fetched
    refused: tuple[tuple[str, str], ...] = ()  # (key, why): no free name for it in DEST

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


def tagged(path: str, tag: str) -> str:
    """`dir/name.ext` with a tag before the extension: `dir/name.TAG.ext` (`dir/name.TAG` without one)."""
    folder, slash, name = path.rpartition("/")
    stem, _, suffix = name.rpartition(".")
    return f"{folder}{slash}" + (f"{stem}.{tag}.{suffix}" if stem else f"{name}.{tag}")


def twin_path(key: str) -> str:
    """Where a key goes when DEST cannot tell its name from another's: the tag follows from the key alone, so the
    name is the same at every pull, whatever else the bucket holds."""
    return tagged(key, f"twin-{hashlib.sha256(key.encode()).hexdigest()[:8]}")


def beside_path(path: str) -> str:
    """Where an object goes when a file the pull did not write is at its path."""
    return tagged(path, BESIDE_TAG)


def plan(
    remote: Iterable[RemoteObject],
    manifest: Mapping[str, Recorded],
    local: Callable[[str], LocalFile | None],
    fold: Callable[[str], str] = lambda path: path,
) -> PullPlan:
    """Sort every remote object into download (new or updated), unchanged, kept, adopted, refused or skipped.

    `local(path)` tells what is at a path relative to DEST (None: nothing).
    `fold(path)` is the name as DEST compares names: two paths with the same
    fold are one file there.
    """
    return _Planner(manifest, local, fold).run(list(remote))


class _Planner:
    def __init__(
        self, manifest: Mapping[str, Recorded], local: Callable[[str], LocalFile | None], fold: Callable[[str], str]
    ) -> None:
        self.manifest = manifest
        self.local = local
        self.fold = fold
        self.claimed: dict[str, str] = {}  # folded path -> the key that lands there
        self.downloads: dict[str, Download] = {}
        self.unchanged: list[RemoteObject] = []
        self.kept: list[str] = []
        self.adopted: list[tuple[str, Recorded]] = []
        self.refused: list[tuple[str, str]] = []

    def run(self, listed: list[RemoteObject]) -> PullPlan:
        skipped = [item.key for item in listed if unsafe_key_reason(item.key) is not None]
        safe = sorted((item for item in listed if unsafe_key_reason(item.key) is None), key=lambda item: item.key)
        # Objects whose copy is where the manifest says keep their place first; the others then take free names,
        # in code-point order, so that which twin keeps its name never depends on the listing.
        placeless = [item for item in safe if not self._keep_place(item)]
        for item in placeless:
            self._place(item)
        in_listing_order = [self.downloads[item.key] for item in listed if item.key in self.downloads]
        return PullPlan(
            tuple(in_listing_order),
            tuple(self.unchanged),
            tuple(skipped),
            tuple(self.kept),
            tuple(self.adopted),
            tuple(self.refused),
        )

    def _claim(self, path: str, key: str) -> bool:
        folded = self.fold(path)
        if folded in self.claimed:
            return False
        self.claimed[folded] = key
        return True

    def _keep_place(self, item: RemoteObject) -> bool:
        """An object the pull wrote before, whose local copy is still there: decided at that place."""
        recorded = self.manifest.get(item.key)
        if recorded is None:
            return False
        place = recorded.place(item.key)
        here = self.local(place)
        if here is None or not self._claim(place, item.key):
            return False
        ours = here.is_copy(recorded.size, recorded.modified)
        if (recorded.size, recorded.etag) == (item.size, item.etag):
            if ours:
                self.unchanged.append(item)
            else:
                self.kept.append(item.key)
        elif ours:
            self.downloads[item.key] = Download(item, Change.UPDATED, place, recorded.aside, replaces=recorded)
        else:
            # Changed here and in the bucket: what is here is the user's now; the bucket's goes beside it.
            self._set_beside(item, place, Change.UPDATED)
        return True

    def _place(self, item: RemoteObject) -> None:
        """An object with no copy in DEST yet: at its own name, or its twin name, unless something is there."""
        home, aside, twin_of = item.key, None, ""
        if not self._claim(home, item.key):
            twin_of = self.claimed[self.fold(home)]
            home, aside = twin_path(item.key), Aside.TWIN
            if not self._claim(home, item.key):
                self.refused.append((item.key, f"no free name here: {home} is taken too"))
                return
        here = self.local(home)
        if here is None:
            self.downloads[item.key] = Download(item, Change.NEW, home, aside, twin_of)
        elif here.is_copy(item.size, item.modified):
            self.adopted.append((item.key, Download(item, Change.NEW, home, aside).recorded()))
            self.unchanged.append(item)
        else:
            self._set_beside(item, home, Change.NEW)

    def _set_beside(self, item: RemoteObject, home: str, change: Change) -> None:
        """A file the pull did not write is at `home`: it stays, and the object lands beside it."""
        spare = beside_path(home)
        if not self._claim(spare, item.key):
            self.refused.append((item.key, f"a file of yours is at {home}, and {spare} is taken too"))
            return
        there = self.local(spare)
        if there is None:
            self.downloads[item.key] = Download(item, change, spare, Aside.YOURS, home)
        elif there.is_copy(item.size, item.modified):
            self.adopted.append((item.key, Download(item, Change.NEW, spare, Aside.YOURS).recorded()))
            self.unchanged.append(item)
        else:
            self.refused.append(
                (item.key, f"files of yours are at {home} and at {spare}: move one away, then pull again")
            )


# --- The manifest ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """The manifest as read from DEST."""

    entries: dict[str, Recorded] = field(default_factory=dict)
    # The last pull stopped while files were arriving (Ctrl-C, kill -9): its .part files may still be in DEST.
    interrupted: bool = False
    damaged: str = ""  # why the manifest in DEST could not be read (it is replaced at the next save)


class NewerManifest(Exception):
    """The manifest was written by a newer trainguard: rewriting it would lose what that version recorded."""

    def __init__(self, version: int) -> None:
        super().__init__(version)
        self.version = version


def load_manifest(text: str) -> Manifest:
    """The manifest's entries; one that cannot be read counts as empty and says why (`damaged`)."""
    try:
        document = json.loads(text)
    except RecursionError:
        return Manifest(damaged="it is nested too deep to be a manifest")
    except ValueError as error:
        return Manifest(damaged=f"it is not JSON ({error})")
    version = document.get("version") if isinstance(document, dict) else None
    if not _is_whole(version):
        return Manifest(damaged="it has no version")
    if version > MANIFEST_VERSION:
        raise NewerManifest(version)
    objects = document.get("objects")
    if version < 1 or not isinstance(objects, dict) or not isinstance(document.get("downloading", False), bool):
        return Manifest(damaged="its layout is not a manifest's")
    entries: dict[str, Recorded] = {}
    for key, entry in objects.items():
        recorded = _entry(key, entry)
        if recorded is None:
            return Manifest(damaged=f"its entry for {key!r} is not one a pull writes")
        entries[key] = recorded
    return Manifest(entries, interrupted=document.get("downloading", False))


def _is_whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry(key: str, entry: Any) -> Recorded | None:
    """A manifest entry, checked field by field; None when any is not what a pull writes."""
    if not isinstance(entry, dict) or unsafe_key_reason(key) is not None:
        return None
    size, etag, modified = entry.get("size"), entry.get("etag"), entry.get("modified")
    path, aside = entry.get("path"), entry.get("aside")
    if not (_is_whole(size) and size >= 0 and isinstance(etag, str)):
        return None
    if modified is not None and not (isinstance(modified, int | float) and math.isfinite(modified)):
        return None
    if path is not None and not (isinstance(path, str) and unsafe_key_reason(path) is None):
        return None
    if aside is not None and aside not in {reason.value for reason in Aside}:
        return None
    return Recorded(
        size, etag, None if modified is None else float(modified), path, None if aside is None else Aside(aside)
    )


def dump_manifest(entries: Mapping[str, Recorded], downloading: bool = False) -> str:
    objects = {}
    for key in sorted(entries):
        recorded = entries[key]
        entry: dict[str, object] = {"size": recorded.size, "etag": recorded.etag}
        if recorded.modified is not None:
            entry["modified"] = recorded.modified
        if recorded.path is not None:
            entry["path"] = recorded.path
        if recorded.aside is not None:
            entry["aside"] = recorded.aside.value
        objects[key] = entry
    document = {"version": MANIFEST_VERSION, "downloading": downloading, "objects": objects}
    return json.dumps(document, indent=0, ensure_ascii=False) + "\n"
