"""views: normalise and resample the cleaned sequences, then write the views of one variant.

A variant is ``<frames>-<normalisation>``. ``<frames>`` is ``50`` (every sequence interpolated to
exactly that many frames: CrosSCLR line ``50-shoulder``, ISC line ``64-spine``), ``upto50``
(longer sequences subsampled to 50 evenly spaced frames, shorter ones kept and zero-padded) or
``stride50`` (P&C's subsampling, which CRRL's NW-UCLA arrays come from: every floor(L/50)-th frame,
the first 50 picked). ``<normalisation>`` is one step or steps joined by ``+``, applied in order
(``upto50-bodyframe+minmax``: into the body's frame, then each axis to [-1, 1]; see
:mod:`skelctl.data.clean`). The output store holds the fixed-length views, the normalised
variable-length sequences (for crop-resize augmentation), the metadata and the split indices;
where the cleaned store has per-joint scores, also ``sequences/scores`` and ``scores/score``
(resampled as the joints, not normalised).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skelctl.data.clean import parse_variant, views_range
from skelctl.data.store import StoreWriter
from skelctl.data.views import VIEWS, compute_view
from skelctl.parallel import chunks, map_chunks, progress
from skelctl.stages import paths
from skelctl.stages.common import ParamsError, Result, StageError, check_dataset, read_store

SAMPLES_PER_TASK = 32


def run(dataset: str, variant: str, data_dir: Path, views: tuple[str, ...] = VIEWS,
        jobs: int = 1) -> dict[str, Any]:
    """Write the views of the variant ``variant`` of ``dataset``'s cleaned store; a malformed
    variant is a ParamsError."""
    try:
        frames, normalisation, sampling = parse_variant(variant)
    except ValueError as err:
        raise ParamsError(str(err)) from None
    variable = bool(sampling)
    unknown = set(views) - set(VIEWS)
    if unknown:
        raise StageError(f"unknown view(s) {', '.join(sorted(unknown))}; known: {', '.join(VIEWS)}")
    check_dataset(paths.cleaned(data_dir, dataset).parent, "views")
    cleaned = read_store(paths.cleaned(data_dir, dataset),
                         f"`skelctl clean {dataset}` (after `skelctl parse`), or all three "
                         f"stages with `skelctl prepare`")
    layout = cleaned.layout()
    if "bone" in views and not layout.has_graph:
        raise StageError(f"layout {layout.name!r} has no skeleton graph: drop 'bone' from "
                         f"views, or describe the skeleton with a layout file (--layout FILE)")
    n = len(cleaned)
    attrs = {k: cleaned.attr(k) for k in ("dataset", "layout", "skeleton", "num_classes",
                                           "protocols", "max_bodies")}
    attrs.update(frames=frames, normalisation=normalisation, variable_length=variable,
                 params={"clean": cleaned.attr("params"), "frames": frames,
                         "variable_length": variable, "sampling": sampling or "interpolate",
                         "normalisation": normalisation,
                         "views": list(views)})
    tasks = [(cleaned, a, b, frames, normalisation, sampling) for a, b in chunks(n, SAMPLES_PER_TASK)]
    out = paths.views(data_dir, dataset, variant)
    meta = cleaned.meta()  # one read: a few hundred bytes per sample
    with StoreWriter(out, attrs, num_samples=n, num_rows=int(cleaned.offsets[-1])) as writer, progress(n, f"views {dataset} {variant}",
                                                     "sample") as bar:
        for (_, start, stop, *_), result in zip(tasks, map_chunks(views_range, tasks, jobs)):
            writer.append({k: v[start:stop] for k, v in meta.items()},
                          views={v: compute_view(v, result["joint"], layout) for v in views},
                          sequences=result["sequences"],
                          sequence_scores=result["sequence_scores"], score=result["score"])
            bar.update(stop - start)
        writer.close({"samples": writer.count})
    return Result({"output": str(out), "samples": n, "frames": frames,
                   "normalisation": normalisation, "variable_length": variable},
                  {"stores": [out]})
