"""The ``skelctl`` command line: one subcommand per pipeline stage, plus prepare, synth, demo and reproduce.

Heavy modules (torch, h5py, the stages) are imported inside the commands so that ``--help``
answers at once. The process around the group (signals, warnings) is ``skelctl/__main__.py``.
"""

from __future__ import annotations

import functools
import signal
from pathlib import Path
from typing import Any, Callable

import click

from skelctl.interrupts import Interrupted

SYNTH_DATASETS = ("ntu60", "ntu120", "pku1", "pku2")
VIEW_NAMES = ("joint", "motion", "bone", "velocity")


# what a rerun of the command does, for the line an interrupt ends with
RERUN = {
    "pretrain": "rerun the command to continue: training resumes from its last checkpoint",
    **dict.fromkeys(("finetune", "semi", "transfer"), "rerun the command to continue: "
                    "fine-tuning resumes from its last checkpoint"),
    "prepare": "rerun the command to start again (parse, clean and views are all redone)",
    **dict.fromkeys(("parse", "clean", "views"), "rerun the command to start again"),
    **dict.fromkeys(("linear", "knn", "probe", "occlusion", "ensemble"),
                    "rerun the command to compute the results again"),
    **dict.fromkeys(("demo", "reproduce"), "rerun the command with the same --workdir to "
                    "continue: finished stages are skipped and training resumes from its last "
                    "checkpoint"),
    "synth": "rerun the command to write the corpus again",
    "tables": "rerun the command to write the tables again",
    "export": "rerun the command to write the files again",
}


def interrupted_line(signum: int, args: list[str]) -> str:
    """The one line SIGINT or SIGTERM ends ``skelctl ARGS`` with: what happened and what a
    rerun of that command does."""
    command = next((a for a in args if a in main.commands), None)
    rerun = RERUN.get(command, "rerun the command to start again")
    if command in ("demo", "reproduce") and not any(a.startswith("--workdir") for a in args):
        rerun = ("rerun the command to start again in a new workspace (give --workdir to have a "
                 "rerun continue one)")
    return (f"{'terminated' if signum == signal.SIGTERM else 'interrupted'}: no partial output "
            f"was left in place; {rerun}")


class InputError(click.ClickException):
    """A mistake in what the user gave (a params value, a name): one ``Error: ...`` line and
    exit status 2, as click gives a wrong option, without the usage text."""

    exit_code = 2


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's and stages' error types into a one-line ``Error: ...`` and exit 1 (2
    for a params mistake); a ``KeyboardInterrupt`` (raised by code, not by the signal handler of
    skelctl.interrupts) into :class:`Interrupted`, which ``skelctl/__main__.py`` ends with one
    line and exit 130."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from skelctl.atomic import DiskFullError
        from skelctl.data.formats.base import DatasetError, SampleError
        from skelctl.data.store import StoreError
        from skelctl.lock import LockError
        from skelctl.stages.common import ParamsError, StageError

        try:
            return command(*args, **kwargs)
        except ParamsError as err:
            raise InputError(str(err)) from None
        except (DatasetError, SampleError, StoreError, StageError, LockError, DiskFullError,
                ValueError) as err:
            raise click.ClickException(str(err)) from None
        except KeyboardInterrupt:
            raise Interrupted(signal.SIGINT) from None

    return wrapper


def comma_list(allowed: tuple[str, ...]) -> Callable[[click.Context, click.Parameter, str], tuple]:
    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
        from skelctl.keys import closest

        items = tuple(v.strip() for v in value.split(",") if v.strip())
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            hint = f"{bad[0]!r}{closest(bad[0], allowed)}: " if bad else ""
            raise click.BadParameter(f"{hint}expected a comma-separated list of "
                                     f"{', '.join(allowed)}")
        return items

    return parse


data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                               default=Path("data"), show_default=True,
                               help="Project data folder (interim/ and processed/ go below it).")
jobs_option = click.option("--jobs", "-j", type=click.IntRange(1, 256), default=1,
                           show_default=True, help="Parallel worker processes.")
dataset_argument = click.argument("dataset")
format_argument = click.argument("dataset", metavar="FORMAT|DATASET")


def params_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--params", "params", type=click.Path(dir_okay=False, path_type=Path),
                        default=None, help="Params file whose section this stage reads "
                        "(default: params.yaml when present, else the papers' settings).")(command)


def parse_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed([
        click.option("--raw", "raw_dir", required=True, type=click.Path(path_type=Path),
                     help="The raw dataset folder."),
        click.option("--on-error", type=click.Choice(["skip", "fail"]), default="skip",
                     show_default=True,
                     help="Skip bad files and report them, or stop at the first one."),
        click.option("--name", default=None,
                     help="generic, crossclr, isc, pyskl, ctrgcn: the dataset's name (stores "
                     "under DATA_DIR/<stage>/NAME, splits NAME-<protocol>); default: the format's "
                     "name."),
        click.option("--layout", default=None,
                     help="generic, crossclr, isc, pyskl, ctrgcn: joint layout, a built-in "
                     "(skelctl layouts), joints<N>[-2d] or a layout file (.yaml/.json); default "
                     "auto (the built-in of the joint and coordinate count most files have; ntu25 "
                     "for ctrgcn)."),
        click.option("--protocol", "protocol_rules", multiple=True,
                     metavar="NAME=COLUMN:V,V[;COLUMN:V,V]",
                     help="generic: a protocol whose training samples have these values in "
                     "these samples.csv columns (the rest test), e.g. xsub=subject:1,3,5,7,9. "
                     "Repeatable."),
        click.option("--labels-from", type=click.IntRange(0), default=None,
                     help="generic: the first label (e.g. 1 when labels count from 1)."),
        params_option,
    ]):
        command = decorator(command)
    return command


def import_settings(dataset: str, params: Path | None, name: str | None, layout: str | None,
                    protocol_rules: tuple[str, ...], labels_from: int | None) -> Any:
    """(format, dataset name, import options) from DATASET, the params' ``datasets`` entry and
    the command-line options, which win."""
    from skelctl.stages.parse import import_settings as settings

    return settings(dataset, default_params(params, runs=False), name=name, layout=layout,
                    protocols=dict(protocol_rule(rule) for rule in protocol_rules),
                    labels_from=labels_from)


def protocol_rule(text: str) -> tuple[str, dict[str, Any]]:
    """``xsub=subject:1,3,5`` to ``("xsub", {"train": {"subject": ["1", "3", "5"]}})``."""
    name, _, conditions = text.partition("=")
    rule: dict[str, list[str]] = {}
    for condition in conditions.split(";"):
        column, _, values = condition.partition(":")
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not column.strip() or not items:
            raise click.BadParameter(f"{text!r}: expected NAME=COLUMN:V,V[;COLUMN:V,V], e.g. "
                                     f"xsub=subject:1,3,5,7,9", param_hint="--protocol")
        rule[column.strip()] = items
    if not name.strip():
        raise click.BadParameter(f"{text!r}: the protocol needs a name before '='",
                                 param_hint="--protocol")
    return name.strip(), {"train": rule}


def clean_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed([
        click.option("--max-bodies", type=click.IntRange(1, 4), default=2, show_default=True,
                     help="Bodies kept per sample (highest energy first)."),
        click.option("--denoise", type=click.BOOL, default=True, show_default=True,
                     help="Drop spurious tracks by length and spread before ranking (true/false)."),
        click.option("--length-threshold", type=int, default=11, show_default=True,
                     help="Denoising: drop tracks present in at most this many frames."),
        click.option("--spread-ratio", type=float, default=0.8, show_default=True,
                     help="Denoising: a frame is too wide when its x-extent exceeds ratio times its y-extent."),
        click.option("--spread-noise-ratio", type=float, default=0.69754, show_default=True,
                     help="Denoising: drop a track when this fraction of its frames is too wide."),
    ]):
        command = decorator(command)
    return command


def views_options(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--views", "view_names", default=",".join(VIEW_NAMES), show_default=True,
                        callback=comma_list(VIEW_NAMES), help="Views to store.")(command)


def denoising(denoise: bool, length_threshold: int, spread_ratio: float,
              spread_noise_ratio: float) -> Any:
    from skelctl.data.bodies import Denoising

    return Denoising(denoise, length_threshold, spread_ratio, spread_noise_ratio)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="skelctl")
def main() -> None:
    """Self-supervised skeleton action recognition: data pipeline, pretraining, evaluation."""


@main.command()
@click.argument("dataset", type=click.Choice(SYNTH_DATASETS))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the raw files into.")
@click.option("--subjects", type=click.IntRange(1, 40), default=8, show_default=True)
@click.option("--replications", type=click.IntRange(1, 9), default=2, show_default=True,
              help="NTU: repetitions of each action; PKU: videos per subject.")
@click.option("--seed", type=int, default=0, show_default=True)
@friendly_errors
def synth(dataset: str, out_dir: Path, subjects: int, replications: int, seed: int) -> None:
    """Write a synthetic corpus in a dataset's real raw format."""
    from skelctl.atomic import replacing_folder
    from skelctl.data import synth as synthetic

    with replacing_folder(out_dir) as tmp:  # the whole corpus or none of it
        if dataset.startswith("ntu"):
            files = synthetic.write_ntu(dataset, tmp, subjects=subjects,
                                        replications=replications, seed=seed)
        else:
            files = synthetic.write_pku(int(dataset[-1]), tmp, subjects=subjects,
                                        videos_per_subject=replications, seed=seed)
    click.echo(f"{dataset}: wrote {len(files)} raw files to {out_dir}")


@main.command()
@format_argument
@parse_options
@data_dir_option
@jobs_option
@friendly_errors
def parse(dataset: str, raw_dir: Path, on_error: str, name: str | None, layout: str | None,
          protocol_rules: tuple[str, ...], labels_from: int | None, params: Path | None,
          data_dir: Path, jobs: int) -> None:
    """Parse a raw folder into DATA_DIR/interim/NAME/parsed.h5. FORMAT is one of ntu60, ntu120,
    ntu61-120, pku1, pku2, nw-ucla, crossclr, isc, pyskl, ctrgcn, generic, or a dataset the
    params' `datasets` section lists."""
    from skelctl.stages import parse as stage

    format_name, name, options = import_settings(dataset, params, name, layout, protocol_rules,
                                                 labels_from)
    report = stage.run(name, raw_dir, data_dir, jobs=jobs, on_error=on_error,
                       format_name=format_name, options=options)
    click.echo(f"{name}: parsed {report['samples']} samples from {report['files']} files, "
               f"{report['rejected_files']} rejected, excluded {report['excluded']}; "
               + stage.describe(report))
    for note in report.get("notes", {}).values():
        click.echo(f"  note: {note}")
    echo_outputs(report)


@main.command()
@dataset_argument
@clean_options
@data_dir_option
@jobs_option
@friendly_errors
def clean(dataset: str, max_bodies: int, denoise: bool, length_threshold: int,
          spread_ratio: float, spread_noise_ratio: float, data_dir: Path, jobs: int) -> None:
    """Select bodies and drop invalid frames: DATA_DIR/interim/DATASET/clean.h5."""
    from skelctl.stages import clean as stage

    report = stage.run(dataset, data_dir, max_bodies=max_bodies, jobs=jobs,
                       denoising=denoising(denoise, length_threshold, spread_ratio,
                                           spread_noise_ratio))
    click.echo(f"{dataset}: cleaned {report['samples']} samples; bodies dropped "
               f"{report['dropped_bodies']}; invalid frames dropped {report['dropped_frames']}\n"
               f"{report['joint_order_message']}")
    echo_outputs(report)


@main.command()
@dataset_argument
@click.option("--variant", default="50-shoulder", show_default=True,
              help="[upto|stride]FRAMES-NORMALISATION: normalisation one of shoulder, spine, "
              "bodyframe, meanbodyframe, seqcentre, minmax, coordminmax, none, or steps joined "
              "by '+' (bodyframe+minmax); "
              "upto: at most FRAMES evenly spaced frames, shorter sequences zero-padded; "
              "stride: P&C's every floor(L/FRAMES)-th frame.")
@views_options
@data_dir_option
@jobs_option
@friendly_errors
def views(dataset: str, variant: str, view_names: tuple[str, ...], data_dir: Path,
          jobs: int) -> None:
    """Normalise, resample and write the views: DATA_DIR/processed/DATASET/VARIANT.h5."""
    from skelctl.stages import views as stage

    result = stage.run(dataset, variant, data_dir, views=view_names, jobs=jobs)
    click.echo(f"{dataset}: wrote {result['samples']} samples to {result['output']}")
    echo_outputs(result)


@main.command()
@format_argument
@parse_options
@clean_options
@click.option("--variant", "variants", multiple=True, default=("50-shoulder",), show_default=True,
              help="FRAMES-NORMALISATION to write; repeat for several.")
@views_options
@data_dir_option
@jobs_option
@friendly_errors
def prepare(dataset: str, raw_dir: Path, on_error: str, name: str | None, layout: str | None,
            protocol_rules: tuple[str, ...], labels_from: int | None, params: Path | None,
            max_bodies: int, denoise: bool, length_threshold: int, spread_ratio: float,
            spread_noise_ratio: float, variants: tuple[str, ...], view_names: tuple[str, ...],
            data_dir: Path, jobs: int) -> None:
    """Parse, clean and write views in a row, then print a summary. FORMAT as for parse."""
    from skelctl.stages import prepare as stage

    format_name, name, options = import_settings(dataset, params, name, layout, protocol_rules,
                                                 labels_from)
    summary = stage.run(format_name, raw_dir, data_dir, variants=variants, jobs=jobs,
                        on_error=on_error, max_bodies=max_bodies,
                        denoising=denoising(denoise, length_threshold, spread_ratio,
                                            spread_noise_ratio), view_names=view_names,
                        name=name, options=options)
    click.echo(stage.format_summary(summary))
    echo_outputs(summary)


def learning_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed([
        # RUN is an argument, not an option: torchrun's parser would take --run for its own
        # --run-path
        click.argument("run_name", metavar="RUN"),
        click.option("--split", required=True, help="DATASET-PROTOCOL, e.g. ntu60-xsub."),
        params_option, data_dir_option, models_option,
    ]):
        command = decorator(command)
    return command


def evaluation_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """RUN (its exported encoders) or --encoder FILE (no params needed), and where to write."""
    for decorator in reversed([
        click.argument("run_name", metavar="[RUN]", required=False),
        click.option("--encoder", "encoder_file", default=None,
                     type=click.Path(dir_okay=False, path_type=Path),
                     help="An exported encoder file to evaluate instead of a run's."),
        click.option("--split", required=True, help="DATASET-PROTOCOL, e.g. ntu60-xsub."),
        params_option, data_dir_option, models_option, results_option,
    ]):
        command = decorator(command)
    return command


def default_params(params: Path | None, runs: bool = True) -> Path | None:
    """``--params``, else params.yaml when present; its every value checked before any work
    starts (one line and exit 2 for a wrong one): the sections, and the runs unless ``runs`` is
    false (the data stages, which read no run and so start without importing torch)."""
    from skelctl.stages.params import read_params

    path = params if params is not None or not Path("params.yaml").is_file() else Path("params.yaml")
    read_params(path, runs)
    return path


models_option = click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path),
                             default=Path("models"), show_default=True)
results_option = click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path),
                              default=Path("results"), show_default=True)
device_option = click.option("--device", default=None,
                             help="auto (CUDA when present), cpu, cuda, cuda:1 ...")


@main.command()
@learning_options
@click.option("--epochs", type=click.IntRange(1), default=None)
@click.option("--batch-size", type=click.IntRange(1), default=None)
@click.option("--lr", type=float, default=None)
@click.option("--seed", type=int, default=None)
@device_option
@click.option("--amp/--no-amp", default=None, help="Mixed precision: bf16 on CPU, fp16 on CUDA.")
@click.option("--restart", is_flag=True,
              help="Train afresh, also when the run's folder holds a run made with other "
              "settings (refused without it). The old run stays in place until the new one is "
              "complete; an interrupted restart resumes when rerun with --restart.")
@friendly_errors
def pretrain(split: str, run_name: str, params: Path | None, data_dir: Path, models_dir: Path,
             epochs: int | None, batch_size: int | None, lr: float | None, seed: int | None,
             device: str | None, amp: bool | None, restart: bool) -> None:
    """Self-supervised pretraining of RUN, an entry of the params' runs or continued list (or an
    ad-hoc METHOD-STREAM[-STREAM...] name, e.g. skeletonclr-joint); ends by exporting each
    stream's encoder to MODELS_DIR/SPLIT/RUN/STREAM.encoder.pt. A continued run starts from its
    start run's exported encoders, which must exist. A rerun with the same settings resumes
    from the run's last checkpoint (a finished run is exported again); with other settings it
    is refused unless --restart. Runs under torchrun too (DDP)."""
    from skelctl.stages import pretrain as stage

    result = stage.run(split, run_name, data_dir, models_dir, default_params(params),
                       {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                        "device": device, "amp": amp}, restart=restart)
    if result["rank"] == 0:
        loss = "" if result["loss"] is None else f", final loss {result['loss']:.4f}"
        click.echo(f"{split} {run_name}: {result['epochs']} epochs{loss}")
        echo_outputs(result)


def echo_outputs(result: Any) -> None:
    """The end of every command that writes files: where its outputs are (the stage's
    :class:`stages.common.Result`), one line per kind under ``outputs:``."""
    from skelctl.stages.common import outputs_text

    if getattr(result, "written", None):
        click.echo(outputs_text(result.written))


def echo_accuracy(split: str, name: str, view: str, m: dict[str, Any], what: str = "") -> None:
    epoch = f" {m['best_epoch']}" if "best_epoch" in m else ""
    click.echo(f"{split} {name} {view}{what}: top-1 {m['top1_last']:.1f} (last epoch), "
               f"{m['top1_best']:.1f} (best epoch{epoch})")


@main.command()
@evaluation_options
@click.option("--epochs", type=click.IntRange(1), default=None)
@click.option("--lr", type=float, default=None)
@device_option
@friendly_errors
def linear(split: str, run_name: str | None, encoder_file: Path | None, params: Path | None,
           data_dir: Path, models_dir: Path, results_dir: Path, epochs: int | None,
           lr: float | None, device: str | None) -> None:
    """Linear evaluation (frozen encoder) of every stream RUN learned, or of --encoder FILE:
    the paper's protocol, and beside it the same classifier on standardised features."""
    from skelctl.stages import evaluate

    results = evaluate.run_linear(split, run_name, data_dir, models_dir, results_dir,
                                  default_params(params),
                                  {"epochs": epochs, "lr": lr, "device": device}, encoder_file)
    for view, m in results.items():
        echo_accuracy(split, run_name or str(encoder_file), view, m)
        echo_accuracy(split, run_name or str(encoder_file), view, m["standardised"],
                      " (standardised features)")
    echo_outputs(results)


@main.command()
@evaluation_options
@device_option
@friendly_errors
def probe(split: str, run_name: str | None, encoder_file: Path | None, params: Path | None,
          data_dir: Path, models_dir: Path, results_dir: Path, device: str | None) -> None:
    """What the features of every stream RUN learned (or of --encoder FILE) encode: linear
    probes to sequence length, net displacement, camera view and action on the test part; how
    their variance spreads over directions; KNN before and after whitening."""
    from skelctl.stages import evaluate

    results = evaluate.run_probe(split, run_name, data_dir, models_dir, results_dir,
                                 default_params(params), {"device": device}, encoder_file)
    for view, figures in results.items():
        spread, knn = figures.pop("spectrum"), figures.pop("knn")
        click.echo(f"{split} {run_name or encoder_file} {view}: " + ", ".join(
            f"{target} {'R2' if f['metric'] == 'r2' else 'acc'} {f['score']:.2f}"
            + ("" if f["metric"] == "r2" else f" (chance {f['chance']:.1f})")
            for target, f in figures.items())
            + f"; variance in the top direction {spread['top1_share']:.2f}, top five "
              f"{spread['top5_share']:.2f}, effective rank {spread['effective_rank']:.1f}; "
              f"KNN {knn['plain']:.1f}, after whitening {knn['whitened']:.1f}")
    echo_outputs(results)


@main.command()
@evaluation_options
@click.option("-k", "k", type=click.IntRange(1), default=None, help="Neighbours (default 1).")
@device_option
@friendly_errors
def knn(split: str, run_name: str | None, encoder_file: Path | None, params: Path | None,
        data_dir: Path, models_dir: Path, results_dir: Path, k: int | None,
        device: str | None) -> None:
    """KNN retrieval (cosine similarity of pre-projector features) of every stream RUN learned,
    or of --encoder FILE."""
    from skelctl.stages import evaluate

    results = evaluate.run_knn(split, run_name, data_dir, models_dir, results_dir,
                               default_params(params), {"k": k, "device": device}, encoder_file)
    for view, m in results.items():
        click.echo(f"{split} {run_name or encoder_file} {view}: KNN (k={m['k']}) top-1 "
                   f"{m['top1']:.1f}")
    echo_outputs(results)


finetune_options = [
    click.option("--epochs", type=click.IntRange(1), default=None),
    click.option("--lr", type=float, default=None),
    click.option("--batch-size", type=click.IntRange(1), default=None),
    device_option,
]


def with_options(options: list[Callable[..., Any]]) -> Callable[..., Any]:
    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = option(command)
        return command
    return apply


@main.command()
@evaluation_options
@click.option("--percent", "percents", type=click.FloatRange(0, 100, min_open=True),
              multiple=True, help="Percent of the training labels (repeatable; default: params "
              "semi.percents, 1 5 10 20).")
@click.option("--seed", "seeds", type=int, multiple=True,
              help="Sampling and training seed (repeatable; default: params semi.seeds).")
@with_options(finetune_options)
@friendly_errors
def semi(split: str, run_name: str | None, encoder_file: Path | None, params: Path | None,
         data_dir: Path, models_dir: Path, results_dir: Path, percents: tuple[float, ...],
         seeds: tuple[int, ...], epochs: int | None, lr: float | None, batch_size: int | None,
         device: str | None) -> None:
    """Semi-supervised evaluation on a per-class fraction of the training labels: encoder +
    linear head fine-tuned, and a linear classifier on the frozen features; seeds averaged."""
    from skelctl.stages import downstream

    results = downstream.run_semi(split, run_name, data_dir, models_dir, results_dir,
                                  default_params(params), {"epochs": epochs, "lr": lr,
                                  "batch_size": batch_size, "device": device},
                                  percents or None, seeds or None, encoder_file)
    for view, per_percent in results.items():
        for percent, m in per_percent.items():
            for protocol in ("finetune", "linear"):
                if protocol in m:
                    echo_accuracy(split, run_name or str(encoder_file), view, m[protocol],
                                  f" with {percent} % labels, {protocol} (mean of "
                                  f"{len(m['seeds'])} seed(s))")
    echo_outputs(results)


@main.command()
@evaluation_options
@with_options(finetune_options)
@friendly_errors
def finetune(split: str, run_name: str | None, encoder_file: Path | None, params: Path | None,
             data_dir: Path, models_dir: Path, results_dir: Path, epochs: int | None,
             lr: float | None, batch_size: int | None, device: str | None) -> None:
    """Fine-tune the whole network (encoder + linear head) on all training labels."""
    from skelctl.stages import downstream

    results = downstream.run_finetune(split, run_name, data_dir, models_dir, results_dir,
                                      default_params(params), {"epochs": epochs, "lr": lr,
                                      "batch_size": batch_size, "device": device},
                                      encoder_file)
    for view, m in results.items():
        echo_accuracy(split, run_name or str(encoder_file), view, m, " fine-tuned")
    echo_outputs(results)


@main.command()
@learning_options
@results_option
@click.option("--source", required=True,
              help="The split the run was pretrained on, e.g. ntu60-xsub; --split is the target.")
@with_options(finetune_options)
@friendly_errors
def transfer(split: str, run_name: str, params: Path | None, data_dir: Path, models_dir: Path,
             results_dir: Path, source: str, epochs: int | None, lr: float | None,
             batch_size: int | None, device: str | None) -> None:
    """Transfer: RUN pretrained on --source, linear-evaluated and fine-tuned on --split."""
    from skelctl.stages import downstream

    results = downstream.run_transfer(split, run_name, source, data_dir, models_dir,
                                      results_dir, default_params(params),
                                      {"epochs": epochs, "lr": lr, "batch_size": batch_size,
                                       "device": device})
    for view, m in results.items():
        echo_accuracy(split, f"{run_name}@{source}", view, m["linear"], " linear")
        echo_accuracy(split, f"{run_name}@{source}", view, m["finetune"], " fine-tuned")
    echo_outputs(results)


@main.command()
@evaluation_options
@friendly_errors
def occlusion(split: str, run_name: str | None, encoder_file: Path | None, params: Path | None,
              data_dir: Path, models_dir: Path, results_dir: Path) -> None:
    """Occlusion robustness: linear evaluation on test data with body parts masked (spatial) or
    a block of frames zeroed (temporal), beside clean data."""
    from skelctl.stages import downstream

    results = downstream.run_occlusion(split, run_name, data_dir, models_dir, results_dir,
                                       default_params(params), encoder_file)
    for view, m in results.items():
        name = run_name or str(encoder_file)
        echo_accuracy(split, name, view, m["clean"], " clean")
        for kind in [k for k in m if isinstance(m[k], dict) and "drop_last" in m[k]]:
            click.echo(f"{split} {name} {view} {kind} occlusion: top-1 {m[kind]['top1_last']:.1f} "
                       f"(last epoch; drop {m[kind]['drop_last']:.1f}), "
                       f"{m[kind]['top1_best']:.1f} (best epoch)")
    echo_outputs(results)


def float_list(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("expected comma-separated numbers, e.g. 0.6,0.4,0.6") from None


@main.command()
@click.option("--split", required=True, help="DATASET-PROTOCOL, e.g. ntu60-xsub.")
@click.option("--method", "name", required=True,
              help="A single-view method (one run per stream, e.g. skeletonclr) or a multi-view "
                   "run (e.g. crosclr-joint-motion-bone).")
@click.option("--streams", default=None, callback=lambda c, p, v: None if v is None else
              comma_list(VIEW_NAMES)(c, p, v), help="e.g. joint,motion,bone")
@click.option("--weights", default=None, callback=float_list,
              help="One per stream (default: params ensemble.weights).")
@params_option
@data_dir_option
@models_option
@results_option
@friendly_errors
def ensemble(split: str, name: str, streams: tuple[str, ...] | None,
             weights: tuple[float, ...] | None, params: Path | None, data_dir: Path,
             models_dir: Path, results_dir: Path) -> None:
    """2s and 3s ensembles by two protocols: the weighted sum of the streams' linear logits
    (posthoc, AimCLR's) and linear heads trained jointly on the mean of their logits (joint,
    CrosSCLR's)."""
    from skelctl.stages import evaluate

    m = evaluate.run_ensemble(split, name, streams, data_dir, models_dir, results_dir,
                              default_params(params), weights)
    for protocol in ("posthoc", "joint"):
        for group, g in m[protocol].items():
            echo_accuracy(split, name, group, g, f" ({protocol})")
    echo_outputs(m)


@main.command()
@params_option
@results_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("tables"), show_default=True)
@friendly_errors
def tables(params: Path | None, results_dir: Path, out_dir: Path) -> None:
    """Write the papers' tables with our numbers (Markdown) and print them."""
    from skelctl.stages import tables as stage

    params = default_params(params)
    if params is None:
        raise click.ClickException("tables needs a params file listing splits, runs and "
                                   "ensembles")
    written = stage.run(params, results_dir, out_dir)
    for text in written.values():
        click.echo(text)
    echo_outputs(written)


@main.command()
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Scratch workspace (default: a new temporary folder).")
@friendly_errors
def demo(workdir: Path | None) -> None:
    """Run the whole DVC pipeline on a synthetic corpus in a scratch workspace."""
    from skelctl.stages import demo as stage

    click.echo(stage.run(workdir))


@main.command()
@click.argument("dataset", type=click.Choice(["nw-ucla"]))
@click.option("--raw", "raw_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The raw recordings (NW-UCLA: the folder of aAA_sSS_eEE_vVV.json files).")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Workspace to create or continue (default: a new scratch folder).")
@click.option("--full", is_flag=True,
              help="Every run of the profile (NW-UCLA: all of Table VIII and the ST-GCN methods, "
                   "several hours on a CPU); without it, the runs its `reproduce.runs` lists "
                   "(NW-UCLA: Rand-Enc, CML, SER and CRRL, under an hour).")
@friendly_errors
def reproduce(dataset: str, raw_dir: Path, workdir: Path | None, full: bool) -> None:
    """Reproduce a paper's tables on real data: the profile params.DATASET.yaml through the
    identical dvc.yaml (prepare, the runs, linear and KNN evaluation, tables), printing the
    tables with the papers' numbers beside ours. Rerunning with the same --workdir continues
    (and adds what --full adds, training nothing twice)."""
    from skelctl.stages import demo as stage

    if not any(raw_dir.glob("*.json")):
        raise click.UsageError(f"{raw_dir}: no NW-UCLA .json recordings in this folder")
    click.echo(stage.run(workdir, dataset, {dataset: raw_dir}, full))


@main.command()
@click.argument("layouts", nargs=-1, metavar="[NAME|FILE]...")
@click.option("--definition", is_flag=True,
              help="Print the layout file of a built-in (a start for your own).")
@friendly_errors
def layouts(layouts: tuple[str, ...], definition: bool) -> None:
    """List the joint layouts (joints in order, bones, centre, left/right pairs, body parts,
    normalisation joints): every built-in, or the ones named; a FILE is checked as it is read."""
    from skelctl.skeletons import BUILTIN_NAMES, builtin_definition, get_layout

    for name in layouts or BUILTIN_NAMES:
        if definition:
            if name not in BUILTIN_NAMES:
                raise click.UsageError(f"--definition prints a built-in ({', '.join(BUILTIN_NAMES)})")
            click.echo(builtin_definition(name))
        else:
            click.echo(get_layout(name).describe() + "\n")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, for scripts.")
@friendly_errors
def info(file: Path, as_json: bool) -> None:
    """What a store (.h5), an encoder file or a training checkpoint holds: dataset, layout,
    variant, views (shapes per sample: C, T, V, M), splits with sizes, classes, the params that
    made it and the version; or encoder, options, layout, view, parameter count and provenance
    (run, split, epochs, metrics); or a checkpoint's run, split, epoch reached of the total,
    settings and last losses (checkpoint.pt and checkpoint.previous.pt)."""
    import json

    from skelctl.stages.info import describe, render

    described = describe(file)
    click.echo(json.dumps(described, indent=2) if as_json else render(described))


@main.command()
@click.argument("store", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--to", "target", required=True,
              type=click.Choice(["crossclr", "isc", "pyskl", "ctrgcn"]),
              help="crossclr: <protocol>/{train,val}_position.npy and _label.pkl (CrosSCLR, "
              "AimCLR); isc: <protocol>/{train,val}_data_joint.npy, _num_frame.npy and "
              "_label.pkl (ISC, CMD, PCM3); pyskl: one annotation pickle; ctrgcn: one .npz per "
              "protocol, NTU60_CS.npz... (CTR-GCN, MAMP).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the files into.")
@friendly_errors
def export(store: Path, target: str, out_dir: Path) -> None:
    """Write a store (processed/DATASET/VARIANT.h5; for isc, pyskl and ctrgcn also
    interim/DATASET/clean.h5) in a reference repository's layout, so that its authors' scripts
    run on exactly this data; `skelctl prepare crossclr|isc|pyskl|ctrgcn` reads such files
    back."""
    from skelctl.stages import export as stage

    click.echo(stage.summary(stage.run(store, target, out_dir)))


if __name__ == "__main__":
    main()
