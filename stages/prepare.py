"""prepare: parse, clean and views in a row, ending with a summary of what was written and dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skelctl.data.bodies import Denoising
from skelctl.data.clean import parse_variant
from skelctl.data.formats import ImportOptions
from skelctl.data.store import Store
from skelctl.data.views import VIEWS
from skelctl.stages import clean, parse, paths, views
from skelctl.stages.common import ParamsError, Result


def run(format_name: str, raw_dir: Path, data_dir: Path, variants: tuple[str, ...] = ("50-shoulder",),
        jobs: int = 1, on_error: str = "skip", max_bodies: int = 2,
        denoising: Denoising = Denoising(), view_names: tuple[str, ...] = VIEWS,
        name: str | None = None, options: ImportOptions = ImportOptions()) -> dict[str, Any]:
    """Prepare the raw folder of format ``format_name`` as the dataset ``name`` (by default the
    format's name; ``options`` apply to the generic format)."""
    for variant in variants:
        try:
            parse_variant(variant)  # fail before hours of parsing, not after
        except ValueError as err:
            raise ParamsError(str(err)) from None
    dataset = name or format_name
    parsed = parse.run(dataset, raw_dir, data_dir, jobs=jobs, on_error=on_error,
                       format_name=format_name, options=options)
    cleaned = clean.run(dataset, data_dir, max_bodies=max_bodies, denoising=denoising, jobs=jobs)
    made = [views.run(dataset, v, data_dir, views=view_names, jobs=jobs) for v in variants]
    outputs = [result["output"] for result in made]
    store = Store(outputs[0])
    splits = {p: {part: len(store.split(f"{p}/{part}")) for part in ("train", "val")}
              for p in store.protocols}
    written = {kind: [path for result in (parsed, cleaned, *made)
                      for path in result.written.get(kind, [])] for kind in ("stores", "reports")}
    return Result({"dataset": dataset, "outputs": outputs,
            **{k: parsed[k] for k in ("layout", "joints", "dims", "classes", "empty_classes")},
            "joint_order": cleaned["joint_order_message"], "samples": len(store), "splits": splits,
            "rejected": parsed["rejected"], "rejected_report": str(paths.rejected(data_dir, dataset)),
            "excluded": parsed["excluded"], "notes": parsed.get("notes", {}),
            "dropped_bodies": cleaned["dropped_bodies"],
            "dropped_frames": cleaned["dropped_frames"],
            "samples_without_valid_frames": cleaned["samples_without_valid_frames"]}, written)


def format_summary(summary: dict[str, Any], max_listed: int = 10) -> str:
    """The human-readable end-of-run summary."""
    lines = [f"{summary['dataset']}: {summary['samples']} samples written to "
             + ", ".join(summary["outputs"]), "  " + parse.describe(summary),
             "  " + summary["joint_order"]]
    for protocol, parts in summary["splits"].items():
        lines.append(f"  {protocol}: train {parts['train']}, val {parts['val']}")
    for reason, count in summary["excluded"].items():
        if count:
            lines.append(f"  excluded, {reason}: {count}")
    for note in summary.get("notes", {}).values():
        lines.append(f"  note: {note}")
    rejected = summary["rejected"]
    lines.append(f"  rejected files: {len(rejected)}"
                 + (f" (all listed in {summary['rejected_report']})" if rejected else ""))
    for path, problem in rejected[:max_listed]:
        lines.append(f"    {path}: {problem}")
    if len(rejected) > max_listed:
        lines.append(f"    ... and {len(rejected) - max_listed} more")
    dropped = ", ".join(f"{reason} {n}" for reason, n in summary["dropped_bodies"].items())
    lines.append(f"  bodies dropped: {dropped}")
    lines.append(f"  invalid frames dropped: {summary['dropped_frames']}")
    empty = summary["samples_without_valid_frames"]
    if empty:
        lines.append(f"  samples without any valid frame (dropped): {len(empty)}")
    return "\n".join(lines)
