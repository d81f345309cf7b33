"""Dataset formats: one module each, registered here by the name the CLI and params use."""

from __future__ import annotations

from skelctl.data.formats.base import DatasetFormat
from skelctl.data.formats.generic import GenericFormat
from skelctl.data.formats.ntu import NTU60, NTU61_120, NTU120
from skelctl.data.formats.pku import PKU1, PKU2
from skelctl.data.formats.ucla import NW_UCLA

FORMATS: dict[str, DatasetFormat] = {
    f.name: f for f in (NTU60, NTU120, NTU61_120, PKU1, PKU2, NW_UCLA)
}
DATASETS: tuple[str, ...] = (*FORMATS, "generic")


def get_format(name: str, layout: str = "auto") -> DatasetFormat:
    """The format of a dataset name; ``layout`` applies to ``generic`` only."""
    if name == "generic":
        return GenericFormat(layout)
    if name not in FORMATS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return FORMATS[name]
