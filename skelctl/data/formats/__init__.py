"""Dataset formats: one module each, registered here by the name the CLI and params use."""

from __future__ import annotations

from skelctl.data.formats.base import DatasetFormat
from skelctl.data.formats.generic import GenericFormat, ImportOptions
from skelctl.data.formats.ntu import NTU60, NTU61_120, NTU120
from skelctl.data.formats.pku import PKU1, PKU2
from skelctl.data.formats.ucla import NW_UCLA

FORMATS: dict[str, DatasetFormat] = {
    f.name: f for f in (NTU60, NTU120, NTU61_120, PKU1, PKU2, NW_UCLA)
}
DATASETS: tuple[str, ...] = (*FORMATS, "generic")


def get_format(name: str, options: ImportOptions = ImportOptions()) -> DatasetFormat:
    """The format of a dataset name; ``options`` (layout, protocol rules, first label) apply to
    ``generic`` only."""
    if name == "generic":
        return GenericFormat(options)
    if name not in FORMATS:
        raise ValueError(f"unknown dataset format {name!r}; known: {', '.join(DATASETS)}")
    if options != ImportOptions():
        raise ValueError(f"{name}: the layout, protocol rules and first label are fixed by the "
                         f"format; they apply to 'generic' only")
    return FORMATS[name]
