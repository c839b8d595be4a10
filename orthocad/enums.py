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
