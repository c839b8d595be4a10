"""Sign-off: who approved which output files, and whether they are still those files.

:func:`sign` writes ``signoff.json`` into a case's output folder: the
approver's name, the UTC time, an optional note, the orthocad version and
the SHA-256 of every file under the folder (``signoff.json`` itself
excepted), keyed by its path relative to the folder (POSIX separators).
:func:`check` hashes the folder again and reports the files that changed,
went missing or were added since; any of them means the signed-off case is
no longer what was approved.

The name is the approver's (a clinician), never the patient's.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orthocad import __version__
from orthocad.errors import InputError

SIGNOFF_NAME = "signoff.json"


@dataclass(frozen=True)
class Signoff:
    """What ``signoff.json`` records."""

    by: str
    time_utc: str  #: ISO 8601, seconds, ``Z``
    note: str | None
    orthocad_version: str
    files: dict[str, str]  #: relative path -> SHA-256

    def to_dict(self) -> dict[str, Any]:
        return {"by": self.by, "time_utc": self.time_utc, "note": self.note,
                "orthocad_version": self.orthocad_version, "files": dict(self.files)}


@dataclass(frozen=True)
class SignoffCheck:
    """The folder against its sign-off: files changed, missing or added since."""

    signoff: Signoff
    changed: tuple[str, ...]
    missing: tuple[str, ...]
    added: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not (self.changed or self.missing or self.added)

    def problems(self) -> list[str]:
        """One phrase per kind of difference, naming the files."""
        return [f"{kind}: {', '.join(files)}" for kind, files in
                (("changed", self.changed), ("missing", self.missing), ("added", self.added))
                if files]


def sign(out_dir: str | os.PathLike[str], *, by: str, note: str | None = None) -> Path:
    """Record that ``by`` approves every file now under ``out_dir``; returns signoff.json's path.

    A new sign-off replaces an earlier one. Raises :class:`InputError` for a
    folder that does not exist or holds no files, or an empty name.
    """
    folder = _folder(out_dir)
    name = " ".join(by.split())
    if not name:
        raise InputError("--by is empty: give the name of the person who approves the files")
    files = hash_files(folder)
    if not files:
        raise InputError(f"{folder} holds no files to sign off: run `orthocad run` into it first")
    record = Signoff(by=name, time_utc=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                     note=note or None, orthocad_version=__version__, files=files)
    target = folder / SIGNOFF_NAME
    handle, temp = tempfile.mkstemp(prefix=f".{SIGNOFF_NAME}.", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(record.to_dict(), stream, indent=2, ensure_ascii=False)
            stream.write("\n")
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target


def check(out_dir: str | os.PathLike[str]) -> SignoffCheck:
    """Compare the files under ``out_dir`` with its ``signoff.json``.

    Raises :class:`InputError` when the folder does not exist or has no
    readable sign-off.
    """
    folder = _folder(out_dir)
    record = read(folder)
    now = hash_files(folder)
    return SignoffCheck(
        signoff=record,
        changed=tuple(sorted(p for p in record.files if p in now and now[p] != record.files[p])),
        missing=tuple(sorted(p for p in record.files if p not in now)),
        added=tuple(sorted(p for p in now if p not in record.files)),
    )


def read(out_dir: str | os.PathLike[str]) -> Signoff:
    """The sign-off recorded in ``out_dir``."""
    path = _folder(out_dir) / SIGNOFF_NAME
    if not path.is_file():
        raise InputError(f"{path.parent} has no {SIGNOFF_NAME}: sign it off first with "
                         f"`orthocad signoff {path.parent} --by NAME`")
    try:
        data = json.loads(path.read_text("utf-8"))
        files = data["files"]
        if not (isinstance(files, dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())):
            raise TypeError("files is not a mapping of paths to hashes")
        return Signoff(by=str(data["by"]), time_utc=str(data["time_utc"]), note=data.get("note"),
                       orthocad_version=str(data.get("orthocad_version", "")), files=files)
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{path} is not a valid sign-off ({error}): sign the folder off again "
                         "after reviewing it") from None


def hash_files(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` except ``signoff.json``, by relative POSIX path."""
    out = {}
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            relative = path.relative_to(folder).as_posix()
            if relative == SIGNOFF_NAME or name.startswith(f".{SIGNOFF_NAME}."):
                continue
            out[relative] = file_sha256(path)
    return dict(sorted(out.items()))


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _folder(out_dir: str | os.PathLike[str]) -> Path:
    folder = Path(out_dir)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder: give a case's output folder "
                         "(the --out of `orthocad run`)")
    return folder
