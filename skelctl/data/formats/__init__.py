"""Dataset formats: one module each, registered here by the name the CLI and params use."""

from __future__ import annotations

from skelctl.data.formats.base import DatasetFormat
from skelctl.data.formats.crossclr import CROSSCLR
from skelctl.data.formats.ctrgcn import CTRGCN
from skelctl.data.formats.generic import GenericFormat, ImportOptions
from skelctl.data.formats.isc import ISC
from skelctl.data.formats.ntu import NTU60, NTU61_120, NTU120
from skelctl.data.formats.pku import PKU1, PKU2
from skelctl.data.formats.pyskl import PYSKL
from skelctl.data.formats.ucla import NW_UCLA

FORMATS: dict[str, DatasetFormat] = {
    f.name: f for f in (NTU60, NTU120, NTU61_120, PKU1, PKU2, NW_UCLA, CROSSCLR, ISC, PYSKL,
                      CTRGCN)
}
DATASETS: tuple[str, ...] = (*FORMATS, "generic")
# the reference repositories' preprocessed arrays: layout, classes and protocols come from the
# files, so each use gets its own instance (a joint layout may be given, as for generic)
ARRAY_FORMATS: tuple[str, ...] = (CROSSCLR.name, ISC.name, PYSKL.name, CTRGCN.name)


def get_format(name: str, options: ImportOptions = ImportOptions()) -> DatasetFormat:
    """The format of a dataset name; ``options`` (layout, protocol rules, first label) apply to
    ``generic``, and the layout to the array formats (crossclr, isc, pyskl, ctrgcn)."""
    if name == "generic":
        return GenericFormat(options)
    if name not in FORMATS:
        raise ValueError(f"unknown dataset format {name!r}; known: {', '.join(DATASETS)}")
    if name in ARRAY_FORMATS:
        if options.protocols or options.labels_from is not None:
            raise ValueError(f"{name}: the protocols come from the files (benchmark folders, "
                             f"split lists or file names) and so do the labels; protocol rules "
                             f"and the first label apply to 'generic' only")
        return type(FORMATS[name])(options.layout)  # type: ignore[call-arg]
    if options != ImportOptions():
        raise ValueError(f"{name}: the layout, protocol rules and first label are fixed by the "
                         f"format; they apply to 'generic' and the layout to "
                         f"{', '.join(ARRAY_FORMATS)} only")
    return FORMATS[name]
