"""ISC: its augmentations, intra- and inter-skeleton contrast with known values, and a run that
trains two kinds of encoder on one stream, exported and evaluated under their own names."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from skelctl import augment
from skelctl.cli import main
from skelctl.methods import OptionsError, build_method
from skelctl.methods.losses import info_nce
from skelctl.models import load_encoder
from skelctl.skeletons import KINECT20, NTU25

from conftest import gen, write_params

TINY = {"gru": {"hidden": 8, "layers": 1}, "agcn": {"hidden": 4},
        "hcn": {"frames": 64, "channels": 8}}


# --- augmentations ----------------------------------------------------------------------------

def test_joint_corruption_changes_the_same_joints_in_every_frame():
    x = torch.rand(400, 3, 12, 25, 2) + 1.0  # no zero coordinate
    out = augment.joint_corruption(x, gen())
    changed = (out != x).any(dim=1)  # (N, T, V, M)
    per_joint = changed.any(dim=(1, 3))  # (N, V)
    assert per_joint.sum(dim=1).eq(15).all()  # 15 of 25, ISC's count
    # a chosen joint changes in every frame and body, the others in none
    assert torch.equal(changed, per_joint[:, None, :, None].expand_as(changed))
    zeroed = (out.abs().sum(dim=(1, 2, 4)) == 0).any(dim=1)
    assert 0.4 < zeroed.float().mean() < 0.6  # zeroed half the time, else a random matrix
    small = torch.rand(50, 3, 4, 20, 1) + 1.0
    changed = (augment.joint_corruption(small, gen()) != small).any(dim=(1, 2, 4))
    assert changed.sum(dim=1).eq(12).all()  # the same share of another layout: 12 of 20


def test_either_applies_one_chain_per_sample_with_its_probability():
    x = torch.rand(2000, 3, 4, 25, 1) + 1.0
    spec = {"either": {"p": 0.3, "first": {"axis_mask": {"p": 1.0}},
                       "second": {"noise": {"std": 0.0, "p": 1.0}}}}
    out = augment.compose(spec, NTU25)(x, gen())
    masked = (out.abs().sum(dim=(2, 3, 4)) == 0).any(dim=1)
    assert 0.27 < masked.float().mean() < 0.33
    assert torch.equal(out[~masked], x[~masked])
    with pytest.raises(ValueError, match="augmentations.either: takes first and second"):
        augment.compose({"either": {"p": 0.5, "first": {}}}, NTU25)


def test_crop_resize_keeps_at_least_min_frames_and_reads_only_valid_frames():
    ramp = torch.arange(100, dtype=torch.float32).view(1, 1, 100, 1, 1).repeat(300, 3, 1, 1, 1)
    lengths = torch.tensor([100, 80, 40] * 100)
    out = augment.crop_resize(ramp, gen(), 0.1, 1.0, frames=64, lengths=lengths, min_frames=64)
    values = out[:, 0, :, 0, 0]
    span = values[:, -1] - values[:, 0]
    # a crop of s frames resized to 64 spans (s - 1) * 63 / 64 frames, about s - 1
    assert (span[lengths == 100] >= 62).all() and (span[lengths == 80] >= 62).all()
    assert torch.allclose(values[lengths == 40][:, 0], torch.zeros(100), atol=0.5)
    assert (values[lengths == 40] <= 39).all()  # shorter than 64: the whole sequence


def test_centre_crop_is_iscs_rule():
    """ISC drops int((1 - 0.95) * n / 2) frames at each end: 2 of 100, 0 of 10."""
    ramp = torch.arange(100, dtype=torch.float32).view(1, 1, 100, 1, 1).repeat(2, 1, 1, 1, 1)
    out = augment.centre_crop_resize(ramp, 0.95, frames=96, lengths=torch.tensor([100, 10]))
    assert torch.allclose(out[0, 0, :, 0, 0], torch.arange(2, 98, dtype=torch.float32))
    assert out[1, 0, 0, 0, 0] == 0 and out[1, 0, -1, 0, 0] == 9


# --- the method -------------------------------------------------------------------------------

def isc(kinds, layout=NTU25, **options):
    torch.manual_seed(0)
    return build_method("isc", ("joint",), layout, 2, list(kinds),
                        {k: TINY[k] for k in kinds} if len(kinds) > 1 else TINY[kinds[0]],
                        {"queue_size": 16, **options})


def batch(n=6, frames=40):
    lengths = torch.tensor([frames, frames - 10] * (n // 2))
    x = torch.randn(n, 3, frames, 25, 2, generator=gen(1))
    x = x * (torch.arange(frames)[None] < lengths[:, None])[:, None, :, None, None]
    return {"sequence": x, "length": lengths, "label": torch.zeros(n, dtype=torch.long),
            "index": torch.arange(n)}


def expected_losses(method, data, seed):
    """The losses recomputed from the method's parts: the same two augmented copies, each
    representation's query against every other representation's key and queue."""
    g = torch.Generator().manual_seed(seed)
    x_q, x_k = method.copy(data, g), method.copy(data, g)
    queues = {k: m.queue.clone() for k, m in method.moco.items()}
    return x_q, x_k, queues


@pytest.mark.parametrize("kinds", [("gru", "agcn"), ("gru", "agcn", "hcn")])
def test_inter_skeleton_contrast_crosses_keys_and_queues(kinds):
    method = isc(kinds).eval()  # eval: the same features when recomputed
    data = batch()
    x_q, x_k, queues = expected_losses(method, data, 3)
    losses = method(data, torch.Generator().manual_seed(3), 0)
    assert set(losses) == {"loss", *(f"inter_{k}" for k in kinds)}
    keys = {k: m.key(x_k) for k, m in method.moco.items()}  # after the momentum update
    total = 0.0
    for kind, moco in method.moco.items():
        z = moco.query(x_q)
        others = [o for o in kinds if o != kind]
        expected = sum(info_nce((z * keys[o]).sum(1), z @ queues[o].T, 0.07)
                       for o in others) / len(others)
        assert losses[f"inter_{kind}"] == pytest.approx(float(expected), rel=1e-5)
        total += float(expected)
        # each queue takes its own representation's keys
        assert torch.allclose(moco.queue[:6], keys[kind], atol=1e-6)
    assert float(losses["loss"]) == pytest.approx(total, rel=1e-5)


def test_one_kind_is_intra_skeleton_contrast():
    method = isc(("gru",)).eval()
    data = batch()
    x_q, x_k, queues = expected_losses(method, data, 5)
    losses = method(data, torch.Generator().manual_seed(5), 0)
    moco = method.moco["gru"]
    z, key = moco.query(x_q), moco.key(x_k)
    assert set(method.encoders()) == {"joint"}
    assert float(losses["intra_gru"]) == pytest.approx(
        float(info_nce((z * key).sum(1), z @ queues["gru"].T, 0.07)), rel=1e-5)


def test_every_kind_learns_and_the_crop_reaches_64_frames():
    method = isc(("gru", "hcn"), layout=KINECT20)
    data = batch(frames=30)
    data["sequence"] = data["sequence"][:, :, :, :20]
    assert method.copy(data, gen()).shape == (6, 3, 64, 20, 2)
    method(data, gen(), 0)["loss"].backward()
    for name, encoder in method.encoders().items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters()), \
            name
    assert set(method.encoders()) == {"joint.gru", "joint.hcn"}


def test_a_fixed_length_encoder_must_match_the_crop():
    with pytest.raises(OptionsError, match="reads 32 frames, but the augmentation's crop_resize "
                                           "gives 64"):
        build_method("isc", ("joint",), NTU25, 2, ["gru", "hcn"],
                     {"gru": TINY["gru"], "hcn": {"frames": 32, "channels": 8}}, {})


def test_several_kinds_are_refused_by_a_method_that_trains_one_and_options_go_by_kind():
    with pytest.raises(OptionsError, match="skeletonclr trains one encoder per stream, not gru, "
                                           "agcn"):
        build_method("skeletonclr", ("joint",), NTU25, 2, ["gru", "agcn"], {}, {})
    with pytest.raises(OptionsError, match="encoder_options maps each encoder to its options"):
        build_method("isc", ("joint",), NTU25, 2, ["gru", "agcn"], {"hidden": 8}, {})


# --- a run of two kinds through the stages ----------------------------------------------------

def test_a_run_exports_and_evaluates_each_kind_under_its_own_name(tmp_path, monkeypatch,
                                                                  prepared_ntu60):
    project = tmp_path / "project"
    project.mkdir()
    write_params(project, {
        "profile": "test", "splits": ["ntu60-xsub"],
        "defaults": {"variant": "64-spine"},
        "runs": {"isc": {"method": "isc", "streams": ["joint"], "encoder": ["gru", "agcn"],
                         "encoder_options": {"gru": TINY["gru"], "agcn": TINY["agcn"]},
                         "options": {"queue_size": 32},
                         "train": {"epochs": 1, "batch_size": 16, "lr_steps": []}},
                 "untrained-isc": {"method": "untrained", "streams": ["joint"],
                                   "encoder": ["gru", "agcn"],
                                   "encoder_options": {"gru": TINY["gru"],
                                                       "agcn": TINY["agcn"]}}},
        "knn": {"k": 1, "device": "cpu"},
        "reproduces": {"isc joint.agcn": {"ISC 6": "Inter (SEQ+STG): STG"},
                       "isc joint.gru": {"ISC 6": "Inter (SEQ+STG): SEQ"}}})
    monkeypatch.chdir(project)
    runner = CliRunner()
    data = ("--split", "ntu60-xsub", "--data-dir", str(prepared_ntu60))
    for run in ("isc", "untrained-isc"):
        result = runner.invoke(main, ["pretrain", run, *data])
        assert result.exit_code == 0, result.output
        models = project / "models" / "ntu60-xsub" / run
        assert sorted(p.name for p in models.glob("*.encoder.pt")) == [
            "joint.agcn.encoder.pt", "joint.gru.encoder.pt"]
        for kind in ("gru", "agcn"):
            encoder, info = load_encoder(models / f"joint.{kind}.encoder.pt")
            assert info["name"] == kind and info["view"] == "joint"
        result = runner.invoke(main, ["knn", run, *data])
        assert result.exit_code == 0, result.output
        summary = json.loads((project / "results" / "ntu60-xsub" / "knn" / f"{run}.json")
                             .read_text())
        assert set(summary) == {"joint.gru", "joint.agcn"}
        assert (project / "results" / "ntu60-xsub" / "knn" / run / "joint.agcn"
                / "metrics.json").is_file()
    history = (project / "models" / "ntu60-xsub" / "isc.loss.csv").read_text().splitlines()
    assert history[0].split(",")[:5] == ["epoch", "lr", "loss", "inter_gru", "inter_agcn"]

