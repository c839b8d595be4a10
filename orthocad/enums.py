"""Named choices used across the pipeline (enums, not strings)."""

from __future__ import annotations

from enum import StrEnum


class Side(StrEnum):
    LEFT = "left"
    RIGHT = "right"
    AUTO = "auto"  #: detect from the geometry


class ScanKind(StrEnum):
    FULL = "full"  #: dorsum and sole
    PLANTAR = "plantar"  #: sole only (foam box, plantar scanner)


class Units(StrEnum):
    AUTO = "auto"
    MM = "mm"
    CM = "cm"
    M = "m"
    IN = "in"

    @property
    def to_mm(self) -> float:
        """Scale factor from this unit to millimetres."""
        return _TO_MM[self]


_TO_MM = {Units.MM: 1.0, Units.CM: 10.0, Units.M: 1000.0, Units.IN: 25.4}


class Loading(StrEnum):
    """How the foot was loaded while scanned (decides which footprint indices apply)."""

    WEIGHT_BEARING = "weight_bearing"
    NON_WEIGHT_BEARING = "non_weight_bearing"
    FOAM_BOX = "foam_box"


class ArchType(StrEnum):
    LOW = "low"  #: planus, flat
    NORMAL = "normal"
    HIGH = "high"  #: cavus


class RearfootType(StrEnum):
    PRONATED = "pronated"  #: everted, valgus heel
    NEUTRAL = "neutral"
    SUPINATED = "supinated"  #: inverted, varus heel


class LldKind(StrEnum):
    """What makes a leg act short (entered by the clinician; a foot scan cannot show it)."""

    STRUCTURAL = "structural"  #: the bones differ in length: lift the short side
    FUNCTIONAL = "functional"  #: pelvis, muscles or joints make a leg act short: treat the cause


class OutputFrame(StrEnum):
    """The coordinates insole files are written in."""

    CANONICAL = "canonical"  #: heel at x = 0, toes +X, bottom z = 0: ready to print
    SCAN = "scan"  #: the scan's own coordinates (to overlay the device on the scan)


class Construction(StrEnum):
    """How the insole is built under its top surface."""

    FILLED = "filled"  #: solid from the top down to the floor
    SHELL = "shell"  #: a uniform shell under the top; heel and forefoot contact solid to the floor


class CaseStatus(StrEnum):
    """How a batch case ended."""

    OK = "ok"  #: run now
    SKIPPED = "skipped"  #: done earlier with the same inputs (counts as success)
    FAILED = "failed"
