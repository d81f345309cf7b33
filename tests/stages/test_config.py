"""Run entries in params: defaults, overrides, ad-hoc and continued runs, per-run protocols, and
the errors that name the file, the run, the key and the accepted keys."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from skelctl.methods import METHODS
from skelctl.methods.crossclr import CrosSCLROptions
from skelctl.skeletons import NTU25
from skelctl.settings import TrainConfig
from skelctl.stages.common import StageError
from skelctl.options import OptionsError
from skelctl.stages.config import RUN_DEFAULTS, load_run, read_params, resolve_run, run_names

from conftest import PROJECT, write_params


BASE = {
    "defaults": {"variant": "64-spine", "encoder": "stgcn",
                 "encoder_options": {"hidden": 4, "out_dim": 8, "dropout": 0.0},
                 "train": {"epochs": 5, "batch_size": 16, "lr": 0.05}},
    "runs": {
        "clr": {"method": "skeletonclr", "streams": ["joint"], "train": {"epochs": 7}},
        "clr-gru": {"method": "skeletonclr", "streams": ["bone"], "encoder": "gru"},
        "clr-gru-own": {"method": "skeletonclr", "streams": ["joint"], "encoder": "gru",
                        "encoder_options": {"hidden": 8, "layers": 1}},
        "clr-same": {"method": "skeletonclr", "streams": ["joint"], "encoder": "stgcn"},
        "cross": {"method": "crosclr", "streams": ["joint", "motion"],
                  "options": {"topk": 3}, "variant": "50-shoulder",
                  "encoder_options": {"hidden": 4, "out_dim": 16}},
    },
}


def test_run_entries_merge_with_the_defaults(tmp_path):
    params = write_params(tmp_path, BASE)
    clr = load_run(params, "clr")
    # train: the run's keys over the defaults' over TrainConfig's, key by key
    assert (clr.train.epochs, clr.train.batch_size, clr.train.lr) == (7, 16, 0.05)
    assert clr.train.lr_steps == [250] and clr.train.momentum == 0.9 and clr.train.seed == 0
    assert clr.method == "skeletonclr" and clr.streams == ("joint",) and clr.options == {}
    assert clr.variant == "64-spine" and clr.encoder == "stgcn"
    assert clr.encoder_options == {"hidden": 4, "out_dim": 8, "dropout": 0.0}  # inherited
    # another encoder and no encoder_options of its own: the shared (ST-GCN) ones are dropped
    other = load_run(params, "clr-gru")
    assert other.encoder == "gru" and other.encoder_options == {}
    assert other.train.epochs == 5 and other.streams == ("bone",)
    assert load_run(params, "clr-gru-own").encoder_options == {"hidden": 8, "layers": 1}
    # naming the shared encoder again keeps the shared options
    assert load_run(params, "clr-same").encoder_options == {"hidden": 4, "out_dim": 8,
                                                            "dropout": 0.0}
    cross = load_run(params, "cross")
    assert cross.options == {"topk": 3} and cross.variant == "50-shoulder"
    assert cross.encoder_options == {"hidden": 4, "out_dim": 16}  # replaced as a whole
    assert cross.train.epochs == 5
    # command-line overrides: the non-None values win over the entry
    over = load_run(params, "clr", {"epochs": 2, "lr": None, "seed": 3})
    assert (over.train.epochs, over.train.lr, over.train.seed) == (2, 0.05, 3)
    assert over.settings() == {"method": "skeletonclr", "streams": ["joint"],
                               "variant": "64-spine", "encoder": "stgcn",
                               "encoder_options": {"hidden": 4, "out_dim": 8, "dropout": 0.0},
                               "options": {}}
    # the run builds, with the entry's options and encoder
    method = cross.build(NTU25, 2)
    assert method.options.topk == 3 and method.options.cross_epoch == 150
    assert method.encoders()["motion"].out_dim == 16


def test_adhoc_runs_need_no_params(tmp_path):
    run = load_run(None, "skeletonclr-joint")
    assert (run.method, run.streams) == ("skeletonclr", ("joint",))
    assert run.variant == RUN_DEFAULTS["variant"] == "50-shoulder"
    assert run.encoder == "stgcn"
    assert run.encoder_options == {"hidden": 16, "out_dim": 256, "dropout": 0.5}
    assert run.train == TrainConfig() and run.options == {}
    multi = load_run(None, "crosclr-joint-motion-bone")
    assert multi.streams == ("joint", "motion", "bone")
    # with a params file that does not list it, the ad-hoc run takes the file's defaults
    adhoc = load_run(write_params(tmp_path, BASE), "crosclr-joint-bone")
    assert adhoc.variant == "64-spine" and adhoc.train.epochs == 5


def test_a_run_may_have_its_own_linear_protocol(tmp_path):
    """linear.runs.<run> overrides the linear section for that run only (CrosNNCLR's lr 0.3 in
    params.yaml); the command line's overrides still win; an unknown key is named."""
    from skelctl.stages.encoders import linear_config

    params = write_params(tmp_path, {**BASE, "linear": {
        "lr": 3.0, "lr_steps": [80], "runs": {"crosnnclr-joint": {"lr": 0.3, "epochs": 90}}}})
    own, _ = linear_config(params, {}, "crosnnclr-joint")
    assert (own.lr, own.epochs, own.lr_steps) == (0.3, 90, [80])
    other, _ = linear_config(params, {}, "skeletonclr-joint")
    assert (other.lr, other.epochs) == (3.0, 100)
    assert linear_config(params, {"lr": 1.0}, "crosnnclr-joint")[0].lr == 1.0
    bad = write_params(tmp_path, {**BASE, "linear": {"runs": {"crosnnclr-joint": {"lr_step": 1}}}})
    with pytest.raises(StageError, match=r"linear.runs.crosnnclr-joint: unknown key\(s\) lr_step "
                                         r"\(did you mean 'lr_steps'\?\)"):
        linear_config(bad, {}, "crosnnclr-joint")
    bad = write_params(tmp_path, {**BASE, "linear": {"runs": {"crosnnclr-joint": {"lr": "x"}}}})
    with pytest.raises(StageError, match=r"linear.runs.crosnnclr-joint.lr: expected a number above "
                                         r"0, found 'x' \(text\)"):
        linear_config(bad, {}, "crosnnclr-joint")
    shipped, _ = linear_config(PROJECT / "params.yaml", {}, "crosnnclr-bone")
    assert (shipped.lr, shipped.lr_steps, shipped.lr_gamma) == (0.3, [80], 0.1)


# the NW-UCLA profile's seed runs: run -> (the row it repeats, its seed, the run it starts from)
NW_UCLA_SEEDS = {"untrained-seed1": ("untrained", 1, None),
                 "untrained-seed2": ("untrained", 2, None), "cml-seed1": ("cml", 1, None),
                 "ser-seed1": ("ser", 1, None),
                 "ser-seed2": ("ser", 2, None), "crrl-seed1": ("crrl", 1, "cml"),
                 "crrl-seed2": ("crrl", 2, "cml"), "crrl-cml-seed1": ("crrl", 1, "cml-seed1"),
                 "untrained-stgcn-seed1": ("untrained-stgcn", 1, None),
                 "untrained-stgcn-seed2": ("untrained-stgcn", 2, None)}


@pytest.mark.parametrize("profile", ["params.yaml", "params.nw-ucla.yaml"])
def test_crrl_rows_take_crrl_evaluation_code_protocol(profile):
    """Every CRRL run (Tables VIII to X) is probed as CRRL's evaluation code probes (the paper
    gives no settings); the ST-GCN runs keep the section's lr 3.0."""
    from skelctl.stages.encoders import linear_config

    runs = ["untrained", "cml", "ser", "cml-ser-joint", "cml-pretrain-ser", "ser-pretrain-cml",
            "crrl", "ser-distill-cml", "ser-forward", "ser-reverse", "cml-coordinate-rotation",
            "cml-coordinate-shear", "cml-coordinate-noise"]
    if profile == "params.nw-ucla.yaml":  # the seeds of the rows the targets rest on
        runs += [name for name, (row, _, _) in NW_UCLA_SEEDS.items() if row in runs]
    for run in runs:
        config, _ = linear_config(PROJECT / profile, {}, run)
        assert (config.lr, config.nesterov, config.batch_size, config.epochs, config.lr_steps,
                config.lr_gamma, config.init_std) == (
            0.1, True, 16, 85, [15, 35, 50, 66, 75], 0.5, 0.01), run
    stgcn, _ = linear_config(PROJECT / profile, {}, "skeletonclr-joint")
    assert (stgcn.lr, stgcn.nesterov, stgcn.batch_size) == (3.0, False, 128)


def test_small_data_recipe_is_probed_as_crrl_probes():
    """The small-data recipe is CRRL's SER: it and its untrained baseline take the NW-UCLA
    profile's protocol for CRRL's runs, key for key."""
    from skelctl.stages.encoders import linear_config

    crrl, _ = linear_config(PROJECT / "params.nw-ucla.yaml", {}, "ser")
    for run in ("untrained", "ser-joint"):
        config, _ = linear_config(PROJECT / "params.small-data.yaml", {}, run)
        assert config == crrl, run
        assert (config.lr, config.nesterov, config.batch_size, config.epochs) == (
            0.1, True, 16, 85)


def test_nw_ucla_seed_runs_differ_from_their_rows_only_in_the_seed():
    """The seed runs of the NW-UCLA profile repeat a Table VIII row with another seed, nothing
    else: a copy that drifted from its row would measure something else."""
    params = PROJECT / "params.nw-ucla.yaml"
    for name, (row, seed, start) in NW_UCLA_SEEDS.items():
        copy, base = load_run(params, name), load_run(params, row)
        assert copy.train.seed == seed and base.train.seed == 0, name
        assert copy.start == start, name
        assert copy.streams == ("joint",) and "joint" in base.streams, name
        assert dataclasses.replace(copy, name=row, start=base.start, streams=base.streams,
                                   train=dataclasses.replace(copy.train, seed=0)) == base, name


def expect_error(params, run, *parts, overrides=None):
    with pytest.raises(StageError) as info:
        load_run(params, run, overrides)
    message = str(info.value)
    for part in (str(params), *parts):
        assert part in message, (part, message)
    return message


def with_run(entry, name="bad"):
    return {**BASE, "runs": {**BASE["runs"], name: entry}}



def test_a_continued_run_is_read_from_the_list_with_its_start(tmp_path):
    entry = {"run": "next", "start": "clr", "method": "skeletonclr", "streams": ["joint"],
             "train": {"epochs": 2}}
    params = write_params(tmp_path, {**BASE, "continued": [entry]})
    run = load_run(params, "next")
    assert (run.start, run.train.epochs, run.variant) == ("clr", 2, "64-spine")
    assert run.settings()["start"] == "clr" and "start" not in load_run(params, "clr").settings()
    assert run_names(read_params(params)) == [*BASE["runs"], "next"]
    expect_error(write_params(tmp_path, with_run({"method": "skeletonclr", "streams": ["joint"],
                                                  "start": "clr"})), "bad",
                 "runs.bad: unknown key(s) start;",
                 "a run that starts from another run is an entry of the 'continued' list")
    expect_error(write_params(tmp_path, {**BASE, "continued": [{**entry, "start": "nope"}]}),
                 "next", "continued[0].start: unknown start run 'nope' (known: clr,")
    expect_error(write_params(tmp_path, {**BASE, "continued": [{**entry, "start": "next"}]}),
                 "next", "continued[0].start: unknown start run 'next'")
    for continued, message in (
            ([{**entry, "run": "clr"}], "run 'clr' is given twice"),
            ([{"run": "next", "method": "skeletonclr"}], "'continued' must be a list of run "
                                                          "entries, each with 'run'")):
        with pytest.raises(StageError, match=re.escape(message)):
            load_run(write_params(tmp_path, {**BASE, "continued": continued}), "clr")

def test_run_entry_errors_name_the_file_the_run_the_key_and_the_accepted_keys(tmp_path):
    joint = {"method": "skeletonclr", "streams": ["joint"]}
    cases = [
        # an unknown key of the entry
        ({**joint, "epochs": 3}, ["runs.bad: unknown key(s) epochs;",
                                  "accepted: method, streams, variant, encoder, "
                                  "encoder_options, options, train"]),
        # an unknown key under train
        ({**joint, "train": {"epoch": 3}}, ["runs.bad.train: unknown key(s) epoch (did you "
                                            "mean 'epochs'?)",
                                            "accepted: epochs, batch_size, lr"]),
        # a misspelt method option
        ({"method": "crosclr", "streams": ["joint", "motion"],
          "options": {"cross_epochs": 3}},
         ["runs.bad.options: unknown option(s) cross_epochs (did you mean 'cross_epoch'?)",
          "accepted: feature_dim, queue_size", "cross_epoch,"]),
        # an encoder option the encoder lacks
        ({**joint, "encoder": "gru", "encoder_options": {"hidden": 8, "out_dim": 4}},
         ["runs.bad.encoder_options: unknown gru option(s) out_dim",
          "accepted: in_channels, cell, hidden",
          "pooling"]),
        # an unknown method
        ({"method": "simclr", "streams": ["joint"]},
         ["runs.bad.method: unknown method 'simclr'",
           f"known: {', '.join(METHODS)})"]),
        # streams not a list of views
        ({"method": "skeletonclr", "streams": "joint"},
         ["runs.bad.streams: expected a list of texts, found 'joint' (text)"]),
        ({"method": "crosclr", "streams": ["joint", "hand"]},
         ["runs.bad.streams: unknown stream 'hand' (known: joint, motion, bone, velocity)"]),
        # a value of the wrong type, at any depth
        ({**joint, "train": {"lr": "0.o4"}},
         ["runs.bad.train.lr: expected a number above 0, found '0.o4' (text)"]),
        ({**joint, "train": {"lr_steps": 20}},
         ["runs.bad.train.lr_steps: expected a list of integers at least 1, found 20"]),
        ({**joint, "encoder": "gru", "encoder_options": {"hidden": "big"}},
         ["runs.bad.encoder_options.hidden: expected an integer, found 'big' (text)"]),
        ({**joint, "options": {"queue_size": 0}},
         ["runs.bad.options.queue_size: expected an integer at least 1, found 0"]),
    ]
    for i, (entry, parts) in enumerate(cases):
        params = write_params(tmp_path, with_run(entry), f"params{i}.yaml")
        expect_error(params, "bad", *parts)
    # a name neither in params nor ad-hoc lists the runs
    params = write_params(tmp_path, BASE)
    expect_error(params, "simclr-joint",
                 "unknown run 'simclr-joint' (runs: clr, clr-gru, clr-gru-own, clr-same, cross;",
                 f"methods: {', '.join(METHODS)}")
    expect_error(params, "clr-gur", "unknown run 'clr-gur'; did you mean 'clr-gru'?")
    with pytest.raises(StageError, match=r"^unknown run 'skeletonclr-hand': no params file was "
                                         r"given \(--params FILE; params.yaml is read when "
                                         r"present\)"):
        load_run(None, "skeletonclr-hand")
    with pytest.raises(StageError, match="params file does not exist"):
        load_run(tmp_path / "absent.yaml", "skeletonclr-joint")


def test_misspelt_method_option_is_an_error_when_the_run_is_read():
    entry = {"method": "crosclr", "streams": ["joint", "motion"], "encoder": "gru",
             "encoder_options": {"hidden": 8, "layers": 1}, "options": {"cross_epochs": 3}}
    with pytest.raises(OptionsError) as info:
        resolve_run({"runs": {"mine": entry}}, "", "mine")
    message = str(info.value)
    assert message.startswith("runs.mine.options: unknown option(s) cross_epochs (did you mean "
                              "'cross_epoch'?); accepted: ")
    accepted = message.split("accepted: ")[1].split(", ")
    assert accepted == [f.name for f in dataclasses.fields(CrosSCLROptions)]
    assert "cross_epoch" in accepted and "detach_teacher" in accepted
    bad_encoder = {**entry, "options": {}, "encoder_options": {"out_dim": 4}}
    with pytest.raises(OptionsError, match=r"runs.mine.encoder_options: unknown gru option"):
        resolve_run({"runs": {"mine": bad_encoder}}, "", "mine")
    run = resolve_run({"runs": {"mine": {**entry, "options": {}}}}, "", "mine")
    assert run.spec.options == CrosSCLROptions() and run.spec.kinds == ("gru",)


def test_defaults_switching_the_encoder_drop_the_builtin_encoder_options(tmp_path):
    params = write_params(tmp_path, {"defaults": {"encoder": "gru"},
                                     "runs": {"r": {"method": "skeletonclr",
                                                    "streams": ["joint"]}}})
    run = load_run(params, "r")
    assert run.encoder == "gru" and run.encoder_options == {}


def test_the_untrained_baseline_s_former_name_is_accepted_with_a_warning(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"runs": {"baseline": {"method": "random",
                                                            "streams": ["joint"]}}}))
    with pytest.warns(FutureWarning, match=f"{params}: runs.baseline: method 'random' is "
                                           f"deprecated; use 'untrained'"):
        run = load_run(params, "baseline")
    assert run.method == "untrained" and not run.trained
    with pytest.warns(FutureWarning):
        assert load_run(None, "random-joint").method == "untrained"  # an ad-hoc name too


def test_crossclr_spelt_as_its_module_names_the_crosclr_method(tmp_path, recwarn):
    params = write_params(tmp_path, {"runs": {"pair": {"method": "crossclr",
                                                       "streams": ["joint", "motion"]}}})
    assert load_run(params, "pair").method == "crosclr"
    assert load_run(None, "crossclr-joint-motion").method == "crosclr"  # an ad-hoc name
    assert not [w for w in recwarn if w.category is FutureWarning]  # not a deprecated name
