"""Batch production: the manifest, safe per-case folders and the resumability hash.

A manifest is a CSV file (UTF-8, a BOM and CRLF line ends are fine) with a
header row naming its columns, in any order:

=============  ========  ===============================================================
column         required  cell
=============  ========  ===============================================================
case_id        yes       the case's name, also its output folder (see below)
left_scan      yes       scan of the left foot, relative to the manifest's folder; may be
                         empty
right_scan     yes       likewise for the right foot; a case needs at least one scan
lld_mm         no        leg-length discrepancy in mm, 0..``LLD_LIMIT_MM``; empty is 0
short_side     no        ``left`` or ``right``: the short leg; required when lld_mm > 0
params         no        parameter file (TOML), relative to the manifest's folder
overrides      no        ``--set`` items joined by ``;`` (``arch.target_mm=16;
                         right.rearfoot_post_deg=3``)
notes          no        free text, carried to the summary
=============  ========  ===============================================================

Header names and cells are stripped of surrounding whitespace; blank rows are
skipped. The structure is checked whole before any work: every problem is
collected with its line number and a bad manifest is refused with one
:class:`ManifestError` that lists them all. A scan or parameter file that is
missing or unreadable is *not* a structural problem: that case fails alone
when it runs.

A case id is 1 to ``CASE_ID_MAX`` characters from ``A-Z a-z 0-9 . _ -``,
starting with a letter or a digit (so never ``.``, ``..``, a hidden name or
an option-like ``-x``), and not a name Windows reserves for a device (``CON``,
``NUL``, ``COM1`` …, with or without an extension), since outputs often live
on shared storage. Ids are unique ignoring case (case-insensitive file systems
would merge their folders). :func:`case_dir` is the only way to turn an id into
a folder and it checks that the folder lies inside the output folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orthocad.enums import Side
from orthocad.errors import InputError, OrthocadError
from orthocad.prescribe import LLD_LIMIT_MM, Overrides, parse_overrides

COLUMNS = ("case_id", "left_scan", "right_scan", "lld_mm", "short_side", "params", "overrides",
           "notes")
REQUIRED_COLUMNS = ("case_id", "left_scan", "right_scan")
CASE_ID_MAX = 40  #: longest case id: as :data:`orthocad.insole.CASE_ID` (ids are engraved)
CASE_ID_RULE = (f"1-{CASE_ID_MAX} characters from A-Z a-z 0-9 . _ -, starting with a letter or "
                "a digit, not a Windows device name")

_CASE_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{CASE_ID_MAX - 1}}}")
_WINDOWS_DEVICES = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?", re.IGNORECASE)
_HASH_CHUNK = 1 << 20


class ManifestError(InputError):
    """A manifest with structural problems, refused whole; ``problems`` lists (line, text)."""

    def __init__(self, path: Path, problems: list[tuple[int, str]]) -> None:
        self.path = path
        self.problems = tuple(problems)
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        lines = "\n".join(f"  line {line}: {text}" if line else f"  {text}"
                          for line, text in problems)
        super().__init__(f"{path}: manifest refused, {count}; fix them and rerun "
                         f"(nothing was processed):\n{lines}")


@dataclass(frozen=True)
class Case:
    """One manifest row, checked; paths are absolute (resolved against the manifest's folder)."""

    case_id: str
    left_scan: Path | None
    right_scan: Path | None
    lld_mm: float
    short_side: Side | None
    params: Path | None
    overrides: Overrides
    notes: str
    line: int  #: line of the manifest where the row starts

    @property
    def scans(self) -> dict[Side, Path]:
        """The scans given, by side."""
        pairs = ((Side.LEFT, self.left_scan), (Side.RIGHT, self.right_scan))
        return {side: path for side, path in pairs if path is not None}


@dataclass(frozen=True)
class Manifest:
    """A checked manifest: its cases in file order."""

    path: Path
    cases: tuple[Case, ...]


def read_manifest(path: str | Path) -> Manifest:
    """Read and check a manifest (see the module doc); raise :class:`ManifestError` if bad."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: manifest not found; check the path") from None
    except UnicodeDecodeError as bad:
        raise InputError(f"{path}: manifest is not UTF-8 text ({bad.reason} at byte "
                         f"{bad.start}); save it as UTF-8 CSV") from None
    except OSError as bad:
        raise InputError(f"{path}: manifest cannot be read ({bad.strerror}); check the path "
                         "and its permissions") from None
    folder = path.resolve().parent
    problems: list[tuple[int, str]] = []
    rows = _rows(text, path, problems)
    header = _header(*rows[0], problems)
    if any(name not in header for name in REQUIRED_COLUMNS):
        raise ManifestError(path, problems)  # the rows cannot be read without these columns
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for line, cells in rows[1:]:
        if len(cells) > len(header):
            problems.append((line, f"{len(cells)} cells but the header has {len(header)} "
                                   "columns; quote cells that contain commas"))
            continue
        if any(cell for name, cell in zip(header, cells, strict=False) if not name):
            problems.append((line, "a cell under a column without a name; name the column "
                                   "or move the cell"))
        row = dict(zip(header, cells, strict=False))
        case_id = row.get("case_id", "")
        first = seen.setdefault(case_id.casefold(), line)
        if first != line and not check_case_id(case_id):
            problems.append((line, f"case_id {case_id!r} repeats the id on line {first} "
                                   "(ids are unique, ignoring case); rename one"))
        case = _case(row, line, folder, problems)
        if case is not None:
            cases.append(case)
    if not problems and not cases:
        problems.append((0, "no cases: add one row per case under the header"))
    if problems:
        raise ManifestError(path, sorted(problems, key=lambda p: p[0]))
    return Manifest(path=path, cases=tuple(cases))


def check_case_id(case_id: str) -> str | None:
    """Why ``case_id`` is unsafe as a folder name, or None when it is safe."""
    if not case_id:
        return "case_id is empty"
    if not _CASE_ID.fullmatch(case_id):
        return f"case_id {case_id!r} is unsafe: use {CASE_ID_RULE}"
    if _WINDOWS_DEVICES.fullmatch(case_id):
        return f"case_id {case_id!r} is a Windows device name; rename it"
    return None


def case_dir(out: str | Path, case_id: str) -> Path:
    """The folder of ``case_id`` under ``out``, guaranteed inside ``out`` (symlinks resolved)."""
    problem = check_case_id(case_id)
    if problem:
        raise InputError(f"{problem}")
    root = Path(out).resolve()
    folder = (root / case_id).resolve()
    if folder.parent != root:
        raise InputError(f"{root / case_id} leads outside {root} (a symbolic link?); "
                         "remove it or choose another --out")
    return folder


def case_hash(case: Case, params_text: str | None, version: str) -> str:
    """SHA-256 of everything a case's outputs depend on: equal inputs, equal hash.

    It covers the scans' contents (not their paths), the parameter file's text
    (``params_text``; None or empty for the defaults), the overrides, the
    leg-length discrepancy and its side, and the orthocad ``version``; not the
    case id, the notes or the manifest line. A missing scan raises
    :class:`~orthocad.errors.ScanReadError` (that case fails alone).
    """
    content = {
        "scans": {side.value: _file_sha256(path) for side, path in case.scans.items()},
        "params": params_text or "",
        "overrides": {"params": _by_side(case.overrides.params),
                      "fields": _by_side(case.overrides.fields)},
        "lld_mm": case.lld_mm,
        "short_side": case.short_side.value if case.short_side else None,
        "version": version,
    }
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# --- parsing --------------------------------------------------------------------------------


def _rows(text: str, path: Path, problems: list[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    """Non-blank CSV rows with the line each starts on, cells stripped."""
    lines = text.splitlines(keepends=True)
    reader = csv.reader(lines, strict=True)
    rows: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for cells in reader:
            stripped = [cell.strip() for cell in cells]
            if any(stripped):
                rows.append((start, stripped))
            start = reader.line_num + 1
    except csv.Error as bad:
        problems.append((start, f"not valid CSV ({bad}); check the quotes"))
    if not rows:
        raise InputError(f"{path}: manifest is empty; give a header row ({', '.join(COLUMNS)}) "
                         "and one row per case")
    return rows


def _header(line: int, cells: list[str], problems: list[tuple[int, str]]) -> list[str]:
    """Column names, lower case; unnamed columns ("") are allowed while their cells are empty."""
    header = [cell.lower() for cell in cells]
    unknown = [name for name in header if name and name not in COLUMNS]
    if unknown:
        problems.append((line, f"unknown column{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(map(repr, unknown))}; the columns are "
                            f"{', '.join(COLUMNS)}"))
    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if repeated:
        problems.append((line, f"column{'s' if len(repeated) > 1 else ''} "
                            f"{', '.join(repeated)} given twice; keep one"))
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        problems.append((line, f"missing required column{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(missing)}; the header needs "
                            f"{', '.join(REQUIRED_COLUMNS)}"))
    return header


def _case(row: dict[str, str], line: int, folder: Path,
          problems: list[tuple[int, str]]) -> Case | None:
    """One row checked; its problems appended; None when it cannot form a case."""
    found: list[str] = []
    case_id = row.get("case_id", "")
    unsafe = check_case_id(case_id)
    if unsafe:
        found.append(unsafe)
    left, right = _path(row.get("left_scan"), folder), _path(row.get("right_scan"), folder)
    if left is None and right is None:
        found.append("no scan: give left_scan, right_scan or both")
    lld = _lld(row.get("lld_mm", ""), found)
    short = _side(row.get("short_side", ""), found)
    if lld and not row.get("short_side"):
        found.append(f"lld_mm = {lld:g} needs short_side (left or right)")
    overrides = _overrides(row.get("overrides", ""), found)
    problems.extend((line, text) for text in found)
    if found:
        return None
    return Case(case_id=case_id, left_scan=left, right_scan=right, lld_mm=lld, short_side=short,
                params=_path(row.get("params"), folder), overrides=overrides,
                notes=row.get("notes", ""), line=line)


def _path(cell: str | None, folder: Path) -> Path | None:
    return (folder / cell).resolve() if cell else None


def _lld(cell: str, found: list[str]) -> float:
    if not cell:
        return 0.0
    try:
        value = float(cell)
    except ValueError:
        found.append(f"lld_mm {cell!r} is not a number; give millimetres, e.g. 8")
        return 0.0
    if not math.isfinite(value) or not 0.0 <= value <= LLD_LIMIT_MM:
        found.append(f"lld_mm {cell!r} is outside 0..{LLD_LIMIT_MM:g} mm")
        return 0.0
    return value


def _side(cell: str, found: list[str]) -> Side | None:
    if not cell:
        return None
    if cell.lower() in (Side.LEFT.value, Side.RIGHT.value):
        return Side(cell.lower())
    found.append(f"short_side {cell!r} is not left or right")
    return None


def _overrides(cell: str, found: list[str]) -> Overrides:
    try:
        return parse_overrides([cell], where="overrides")
    except OrthocadError as bad:
        # The unknown-key message lists every key; once per row is too much in a list.
        text, _, _ = str(bad).partition("; parameters: ")
        found.append(text if text == str(bad) else f"{text}; list them with `orthocad params "
                                                   "--dump`")
        return parse_overrides([])


# --- hashing --------------------------------------------------------------------------------


def _file_sha256(path: Path) -> str:
    from orthocad.errors import ScanReadError

    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(_HASH_CHUNK):
                digest.update(chunk)
    except OSError as bad:
        raise ScanReadError(f"{path}: scan cannot be read ({bad.strerror}); check the manifest's "
                            "path") from None
    return digest.hexdigest()


def _by_side(groups: Mapping[Side | None, Mapping[str, Any]]) -> dict[str, Any]:
    """Overrides of one kind as plain data ("both" for side None), empty sides left out."""
    return {(side.value if side else "both"): dict(values)
            for side, values in groups.items() if values}
