"""CRRL: its data variant, the packed GRU, SER, CML, INF, the fusion phases, and learning on the
real NW-UCLA recordings."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from skelctl.data.clean import min_max, parse_variant, subsample
from skelctl.methods import build_method
from skelctl.methods.crrl import reconstruction_loss, reverse_within, rms_matched, velocity
from skelctl.models import build_encoder
from skelctl.models.rnn import sequence_lengths, step_mask
from skelctl.skeletons import get_layout
from skelctl.train import Samples, fit
from skelctl.settings import TrainConfig
from skelctl.stages.common import StageError

LAYOUT = get_layout("kinect20")
CPU = torch.device("cpu")


def padded_batch(lengths: list[int], frames: int = 12, seed: int = 0) -> torch.Tensor:
    """``(N, 3, frames, 20, 1)`` random sequences, zero after each length."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(len(lengths), 3, frames, 20, 1, generator=g) * 2 - 1
    for i, n in enumerate(lengths):
        x[i, :, n:] = 0
    return x


def crrl(options: dict | None = None, **encoder_options) -> nn.Module:
    torch.manual_seed(0)
    return build_method("crrl", ("joint",), LAYOUT, 1, "gru",
                        {"hidden": 16, "dropout": 0.0, **encoder_options}, options)


# ---- data ---------------------------------------------------------------------------------

def test_min_max_scales_each_axis_of_each_sequence_over_its_frames_and_joints():
    # two sequences (3 and 2 frames), axes x and y, two joints, one body: (F, C, V, M)
    x = np.array([[0.0, 5.0], [2.0, 5.0], [4.0, 10.0], [10.0, -1.0], [20.0, 1.0]])
    frames = np.stack([x, np.full_like(x, 7.0)], axis=1)[..., None].astype(np.float32)
    out = min_max(frames, np.array([0, 3, 5]))[..., 0]
    np.testing.assert_allclose(out[:, 0], [[-1, 0], [-0.6, 0], [-0.2, 1],       # 0..10
                                           [0.0476190, -1], [1, -0.8095238]],  # -1..20
                               rtol=1e-5)
    assert not out[:, 1].any()  # a constant axis becomes 0


def test_subsample_keeps_short_sequences_and_thins_long_ones():
    frames = np.arange(13, dtype=np.float32)[:, None] + 1  # sequences of 3 and 10 frames
    out = subsample(frames, np.array([0, 3, 13]), 4)[..., 0]
    np.testing.assert_array_equal(out[0], [1, 2, 3, 0])            # kept, zero-padded
    np.testing.assert_array_equal(out[1], [4, 6, 9, 11])            # frames 0, 2, 5, 7 of 10
    # P&C's stride: every floor(10 / 4) = 2nd frame, the first four of them
    stride = subsample(frames, np.array([0, 3, 13]), 4, stride=True)[..., 0]
    np.testing.assert_array_equal(stride, [[1, 2, 3, 0], [4, 6, 8, 10]])
    assert parse_variant("upto50-minmax") == (50, "minmax", "upto")
    assert parse_variant("stride50-bodyframe+minmax") == (50, "bodyframe+minmax", "stride")
    assert parse_variant("50-shoulder") == (50, "shoulder", "")


def test_sequence_lengths_read_the_zero_padding():
    x = padded_batch([12, 5, 1, 7])
    assert sequence_lengths(x).tolist() == [12, 5, 1, 7]
    x[1, :, 2] = 0  # an all-zero frame inside a sequence does not end it
    assert sequence_lengths(x).tolist() == [12, 5, 1, 7]


# ---- packed GRU ---------------------------------------------------------------------------

def test_packed_gru_gives_each_sequence_the_features_it_has_alone():
    torch.manual_seed(0)
    encoder = build_encoder("gru", LAYOUT, 1, hidden=16).eval()
    lengths = [12, 5, 9, 1]
    x = padded_batch(lengths)
    together = encoder(x)
    steps = encoder.features(x)
    for i, n in enumerate(lengths):
        alone = x[i:i + 1, :, :n]  # no padding at all
        torch.testing.assert_close(together[i], encoder(alone)[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(steps[i, :n], encoder.features(alone)[0], rtol=1e-5,
                                   atol=1e-6)
        assert steps[i, n:].abs().sum() == 0  # nothing computed past the end
    assert together.shape == (4, 32)


# ---- SER ----------------------------------------------------------------------------------

def test_velocity_is_eq_2_with_the_last_frame_repeating_the_one_before():
    x = torch.zeros(1, 1, 5, 1, 1)
    x[0, 0, :4, 0, 0] = torch.tensor([1.0, 3.0, 6.0, 10.0])
    assert velocity(x, torch.tensor([4]))[0, 0, :, 0, 0].tolist() == [2, 3, 4, 4, 0]


def test_reverse_within_reverses_only_the_real_steps():
    seq = torch.arange(1.0, 6.0)[None, :, None].repeat(2, 1, 1)
    seq[1, 3:] = 0
    out = reverse_within(seq, torch.tensor([5, 3]))[..., 0]
    assert out.tolist() == [[5, 4, 3, 2, 1], [3, 2, 1, 0, 0]]


def test_reconstruction_loss_is_the_squared_distance_per_frame_of_each_direction():
    class Echo(nn.Module):  # a decoder that outputs its hint at every step
        def forward(self, hints, t, lengths):
            return hints[:, None].expand(-1, t, -1)

    steps = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [0.0, 0.0]]])  # length 2, 2 coordinates
    target = torch.tensor([[[1.0, 2.0], [3.0, 3.0], [0.0, 0.0]]])
    lengths = torch.tensor([2])
    # forward from steps[0] = (1, 1): squared distances 1 and 8 over 2 frames
    assert reconstruction_loss(Echo(), steps, target, lengths, ["forward"]).item() == 4.5
    # reverse from steps[1] = (2, 2) against (3, 3), (1, 2): 2 and 1
    assert reconstruction_loss(Echo(), steps, target, lengths, ["reverse"]).item() == 1.5
    assert reconstruction_loss(Echo(), steps, target, lengths, ["forward", "reverse"]).item() \
        == 6.0
    # a second sample counts once in the batch mean, whatever its length
    two = reconstruction_loss(Echo(), steps.repeat(2, 1, 1), target.repeat(2, 1, 1),
                              torch.tensor([2, 2]), ["forward"])
    assert two.item() == 4.5


@pytest.mark.parametrize("readout", [True, False])
def test_ser_reconstructs_a_known_sequence_better_after_a_few_steps(readout):
    method = crrl({"student": "ser", "fusion": "none", "decoder_readout": readout})
    x = padded_batch([12, 8, 10, 6])
    t = torch.linspace(0, 1, 12)
    x[:, :, :] = torch.sin(6 * t)[None, None, :, None, None] * x[:, :, :1]  # smooth sequences
    x[1, :, 8:], x[2, :, 10:], x[3, :, 6:] = 0, 0, 0
    batch = {"joint": x}
    generator = torch.Generator().manual_seed(0)
    before = method(batch, generator, 0)["reconstruction"].item()
    optimizer = torch.optim.Adam(method.parameters(), lr=0.01)
    for _ in range(60):
        loss = method(batch, generator, 0)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = method(batch, generator, 0)["reconstruction"].item()
    assert after < 0.5 * before, (before, after)


def test_decoder_without_readout_is_a_gru_whose_state_is_the_reconstruction():
    paper = crrl({"student": "ser", "fusion": "none"}).decoder
    authors = crrl({"student": "ser", "fusion": "none", "decoder_readout": False}).decoder
    assert paper.rnn.hidden_size == 256 and paper.readout.out_features == 60
    assert authors.rnn.hidden_size == 60 and isinstance(authors.readout, nn.Identity)
    hints = torch.randn(3, 32) * 100  # a GRU state stays inside (-1, 1) whatever its input
    out = authors(hints, 7, torch.tensor([7, 4, 2]))
    assert out.shape == (3, 7, 60) and out.abs().max() < 1
    assert not out[1, 4:].any() and not out[2, 2:].any()  # nothing after each length


# ---- CML ----------------------------------------------------------------------------------

def test_cml_key_mlp_stays_bit_identical_while_the_key_encoder_moves():
    method = crrl({"student": "cml", "fusion": "none", "queue_size": 8})
    moco = method.contrast
    key_mlp = copy.deepcopy(moco.projector_k.state_dict())
    key_encoder = copy.deepcopy(moco.encoder_k.state_dict())
    query_mlp = copy.deepcopy(moco.projector_q.state_dict())
    samples = Samples({"joint": padded_batch([12, 5, 9, 3, 12, 7, 8, 2], seed=1),
                       "label": torch.zeros(8, dtype=torch.long),
                       "index": torch.arange(8)})
    fit(method, samples, method.phases(3, 0.1, [], 0.1, 0.9, 0.0),
        TrainConfig(epochs=3, batch_size=4, lr=0.1, lr_steps=[]), None, CPU, log=lambda _: None)
    for name, value in moco.projector_k.state_dict().items():
        assert torch.equal(value, key_mlp[name]), name
    assert any(not torch.equal(v, key_encoder[k]) for k, v in moco.encoder_k.state_dict().items())
    assert any(not torch.equal(v, query_mlp[k]) for k, v in moco.projector_q.state_dict().items())
    assert len(moco.queue) == 8


def test_cml_as_its_authors_built_it():
    """The key MLP its own initialisation (not the query MLP's copy), 512 -> 512 -> 512 on the
    512-d feature, no clipping in the CML step, PyTorch's GRU initialisation as an option."""
    torch.manual_seed(0)
    method = build_method("crrl", ("joint",), LAYOUT, 1, "gru", {"init": "default"},
                          {"student": "cml", "fusion": "none"})
    moco = method.contrast
    assert [layer.weight.shape for layer in moco.projector_q if isinstance(layer, nn.Linear)] \
        == [(512, 512), (512, 512)]
    for (name, q), k in zip(moco.projector_q.state_dict().items(),
                            moco.projector_k.state_dict().values()):
        assert not torch.equal(q, k), name  # drawn separately
    # PyTorch's GRU initialisation: biases are not zero, weights within 1/sqrt(hidden)
    bias = method.encoder.rnn.bias_ih_l0
    assert bias.abs().min() > 0 and bias.abs().max() <= 1 / 256 ** 0.5
    xavier = crrl({"student": "cml", "fusion": "none"})
    assert not xavier.encoder.rnn.bias_ih_l0.any()
    copied = crrl({"student": "cml", "fusion": "none", "own_key_projector": False})
    for (name, q), k in zip(copied.contrast.projector_q.state_dict().items(),
                            copied.contrast.projector_k.state_dict().values()):
        assert torch.equal(q, k), name
    # the run's grad_clip reaches SER's steps, not CML's unless asked
    phases = crrl().phases(3, 0.04, [], 0.5, 0.9, 1e-4)  # CRRL: CML first, then SER
    assert [(p.name, p.clip) for p in phases] == [("cml", False), ("ser", True)]
    phases = crrl({"cml_grad_clip": True}).phases(3, 0.04, [], 0.5, 0.9, 1e-4)
    assert [p.clip for p in phases] == [True, True]
    assert [p.clip for p in xavier.phases(3, 0.01, [], 0.5, 0.9, 0.0)] == [False]
    with pytest.raises(ValueError, match="init must be one of xavier, xavier_weights, default"):
        build_encoder("gru", LAYOUT, 1, init="orthogonal")


def test_the_clip_flag_of_a_phase_decides_whether_gradients_are_clipped():
    def largest_step(clip: bool) -> float:
        method = crrl({"student": "cml", "fusion": "none", "queue_size": 8,
                       "cml_grad_clip": clip})
        before = [p.detach().clone() for p in method.contrast.encoder_q.parameters()]
        samples = Samples({"joint": padded_batch([12, 5, 9, 3], seed=2) * 50,
                           "label": torch.zeros(4, dtype=torch.long), "index": torch.arange(4)})
        fit(method, samples, method.phases(1, 1.0, [], 0.1, 0.0, 0.0),
            TrainConfig(epochs=1, batch_size=4, lr=1.0, lr_steps=[], grad_clip=1e-6), None,
            CPU, log=lambda _: None)
        return max((p - b).abs().max().item()
                   for p, b in zip(method.contrast.encoder_q.parameters(), before))

    assert largest_step(True) < 1e-5 < largest_step(False)


def test_rms_matched_scales_each_sample_to_the_other_tensors_rms():
    v = torch.tensor([[1.0, -1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [3.0, 4.0, 0.0, 0.0]])
    x = torch.tensor([[2.0, 2.0, 2.0, -2.0], [5.0, 0.0, 0.0, 0.0], [0.0, 10.0, 0.0, 0.0]])
    # RMS 1 -> 2 (x 2); all zero stays zero; sums of squares 25 -> 100 (x 2)
    assert rms_matched(v, x).tolist() == [[2, -2, 2, 2], [0, 0, 0, 0], [6, 8, 0, 0]]


def key_inputs(options: dict, x: torch.Tensor) -> torch.Tensor:
    """What CML's key encoder reads in one step on ``x``."""
    method = crrl({"student": "cml", "fusion": "none", "queue_size": 8, **options})
    seen = []
    method.contrast.encoder_k.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    method.contrastive_loss(x, sequence_lengths(x), torch.Generator().manual_seed(0))
    return seen[0]


def test_velocity_scale_sequence_gives_the_key_each_sequences_coordinate_rms():
    x = padded_batch([12, 5, 9, 3], seed=3)
    lengths = sequence_lengths(x)
    x[3, :, :3] = x[3, :, :1]  # a still sequence: no velocity
    plain = velocity(x, lengths)
    assert torch.equal(key_inputs({}, x), plain)  # the default: Eq. 2 as it is
    scaled = key_inputs({"velocity_scale": "sequence"}, x)
    real = step_mask(lengths, 12)[:, None, :, None, None].expand_as(x)
    for i in range(3):
        rms_x, rms_v = (t[i][real[i]].pow(2).mean().sqrt() for t in (x, scaled))
        assert rms_v == pytest.approx(float(rms_x), rel=1e-5)
        ratio = scaled[i][real[i]] / plain[i][real[i]]  # one factor a sequence
        assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-5)
    assert not scaled[3].any() and not scaled[~real].any()  # still and padding: zero
    with pytest.raises(ValueError, match="velocity_scale sequence scales CML's velocity key "
                                         "input; key_input coordinate has none"):
        crrl({"velocity_scale": "sequence", "key_input": "coordinate"})
    with pytest.raises(ValueError, match=r"options.velocity_scale: expected one of none, "
                                         r"sequence, found 'unit'"):
        crrl({"velocity_scale": "unit"})


# ---- INF and the fusion strategies ----------------------------------------------------------

def test_the_teacher_runs_in_the_mode_asked():
    for mode in ("eval", "train"):
        method = crrl({"teacher_mode": mode})
        seen = []
        method.teacher.register_forward_hook(lambda module, *_: seen.append(module.training))
        method({"joint": padded_batch([12, 5, 9])}, torch.Generator().manual_seed(0),
               method.options.first["epochs"])
        assert seen == [mode == "train"]


def test_distillation_term_is_zero_when_the_student_equals_the_teacher():
    method = crrl()  # CRRL: CML teacher, SER student
    method.teacher.load_state_dict(method.encoder.state_dict())
    method.distill_head = nn.Identity()
    batch = {"joint": padded_batch([12, 5, 9])}
    first = method.options.first["epochs"]
    losses = method(batch, torch.Generator().manual_seed(0), first)  # the student's step
    assert losses["distill"].item() == 0.0 and "contrast" not in losses
    method.teacher.load_state_dict(build_encoder("gru", LAYOUT, 1, hidden=16).state_dict())
    assert method(batch, torch.Generator().manual_seed(0), first)["distill"].item() > 0


@pytest.mark.parametrize("student, fusion, first, second", [
    ("ser", "distill", "cml", "ser"), ("cml", "distill", "ser", "cml"),
    ("ser", "pretrain", "cml", "ser"), ("cml", "pretrain", "ser", "cml")])
def test_two_step_strategies_train_the_other_objective_first(student, fusion, first, second):
    method = crrl({"student": student, "fusion": fusion,
                   "first": {"epochs": 2, "lr": 0.01}, "queue_size": 8})
    phases = method.phases(3, 0.04, [1], 0.5, 0.9, 1e-4)
    assert [(p.name, p.epochs, p.lr) for p in phases] == [(first, 2, 0.01), (second, 3, 0.04)]
    teacher = method.teacher if fusion == "distill" else method.encoder
    student_params = {id(p) for g in phases[1].groups(method) for p in g["params"]}
    first_params = {id(p) for g in phases[0].groups(method) for p in g["params"]}
    assert {id(p) for p in teacher.parameters()} <= first_params
    assert {id(p) for p in method.encoder.parameters()} <= student_params
    if fusion == "distill":  # the frozen teacher is not trained in the student's step
        assert not {id(p) for p in teacher.parameters()} & student_params
    batch = {"joint": padded_batch([12, 5, 9, 4])}
    names = {0: set(method(batch, torch.Generator().manual_seed(0), 0)),
             2: set(method(batch, torch.Generator().manual_seed(0), 2))}
    objective = {"cml": "contrast", "ser": "reconstruction"}
    assert objective[first] in names[0] and objective[second] not in names[0]
    assert objective[second] in names[2] and objective[first] not in names[2]
    assert ("distill" in names[2]) == (fusion == "distill")


def test_ser_pretrain_cml_starts_the_key_encoder_from_the_pretrained_query_encoder():
    method = crrl({"student": "cml", "fusion": "pretrain", "first": {"epochs": 1, "lr": 0.01},
                   "queue_size": 8})
    with torch.no_grad():  # as if SER had trained the shared encoder
        for p in method.encoder.parameters():
            p.add_(0.5)
    method(({"joint": padded_batch([12, 5, 9, 4])}), torch.Generator().manual_seed(0), 1)
    for (name, q), k in zip(method.encoder.state_dict().items(),
                            method.contrast.encoder_k.state_dict().values()):
        torch.testing.assert_close(k, q, msg=name)  # copied, then one momentum step of 0
    assert bool(method.key_synced)


@pytest.mark.parametrize("student, fusion", [
    ("ser", "distill"), ("cml", "distill"), ("ser", "pretrain"), ("cml", "pretrain")])
def test_a_run_started_from_another_takes_its_encoder_as_the_first_step(student, fusion):
    source = build_encoder("gru", LAYOUT, 1, hidden=16, dropout=0.0)
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    method = crrl({"student": student, "fusion": fusion, "first": {"epochs": 2, "lr": 0.01},
                   "queue_size": 8})
    method.start_from({"joint": source}, "other-run")
    taken = method.teacher if fusion == "distill" else method.encoder
    for (name, got), want in zip(taken.state_dict().items(), source.state_dict().values()):
        assert torch.equal(got, want), name
    phases = method.phases(3, 0.04, [1], 0.5, 0.9, 1e-4)
    assert [(p.name, p.epochs) for p in phases] == [(student, 3)]  # the first step is not trained
    objective = {"cml": "contrast", "ser": "reconstruction"}
    losses = method({"joint": padded_batch([12, 5, 9, 4])}, torch.Generator().manual_seed(0), 0)
    assert objective[student] in losses and ("distill" in losses) == (fusion == "distill")
    assert objective["ser" if student == "cml" else "cml"] not in losses


def test_only_a_strategy_with_a_first_step_can_start_from_another_run():
    source = build_encoder("gru", LAYOUT, 1, hidden=16, dropout=0.0)
    with pytest.raises(ValueError, match="CRRL with fusion none has no first step to take from "
                                         "run 'ser'"):
        crrl({"student": "cml", "fusion": "none"}).start_from({"joint": source}, "ser")
    with pytest.raises(ValueError, match="SkeletonCLR has no first step that another run"):
        build_method("skeletonclr", ("joint",), LAYOUT, 1, "gru", {"hidden": 16}, {}).start_from(
            {"joint": source}, "ser")


def test_option_errors_name_the_option():
    with pytest.raises(ValueError, match=r"options.fusion: expected one of none, joint, pretrain, "
                                         r"distill, found 'both' \(text\)"):
        crrl({"fusion": "both"})
    with pytest.raises(ValueError, match=r"options.directions\[0\]: expected one of forward, "
                                         r"reverse, found 'sideways' \(text\)"):
        crrl({"directions": ["sideways"]})
    with pytest.raises(ValueError, match="options.directions: expected some of forward, reverse"):
        crrl({"directions": []})
    with pytest.raises(ValueError, match="CRRL needs a recurrent encoder"):
        build_method("crrl", ("joint",), LAYOUT, 1, "stgcn", {"hidden": 4, "out_dim": 8}, {})


# ---- real data ----------------------------------------------------------------------------

@pytest.mark.slow
def test_crrl_beats_the_random_encoder_on_nw_ucla_under_knn(prepared_nw_ucla, tmp_path):
    """A cut-down NW-UCLA profile: CML 3 epochs, then SER with distillation 12 epochs (SER's KNN
    figure dips in its first epochs and passes the untrained encoder's from about the tenth)."""
    from skelctl.stages import evaluate, pretrain

    data, models, results = prepared_nw_ucla, tmp_path / "models", tmp_path / "results"
    split = "nw-ucla-xview"
    base = {"variant": "upto50-bodyframe+minmax", "encoder": "gru", "encoder_options": {},
            "train": {"epochs": 12, "batch_size": 32, "lr": 0.04, "lr_steps": [],
                      "checkpoint_every": 100, "seed": 0, "device": "cpu", "grad_clip": 5.0}}
    params = tmp_path / "params.yaml"
    import yaml
    params.write_text(yaml.safe_dump({"defaults": base, "runs": {
        "untrained": {"method": "untrained", "streams": ["joint"]},
        "crrl": {"method": "crrl", "streams": ["joint"],
                 "options": {"decoder_readout": False, "first": {"epochs": 3, "lr": 0.01}}}},
        "knn": {"k": 1, "device": "cpu"}}))
    accuracy = {}
    for run in ("untrained", "crrl"):
        pretrain.run(split, run, data, models, params, {})
        knn = evaluate.run_knn(split, run, data, models, results, params, {})
        accuracy[run] = knn["joint"]["top1"]
    history = (models / split / "crrl.loss.csv").read_text().splitlines()
    assert len(history) == 1 + 15 and (models / split / "crrl.loss.png").is_file()
    assert accuracy["crrl"] > accuracy["untrained"] + 5, accuracy


# ---- the reproduction command ---------------------------------------------------------------

def test_reproduce_sets_up_the_nw_ucla_profile_with_the_raw_folder(tmp_path):
    import yaml
    from click.testing import CliRunner

    from skelctl.cli import main
    from skelctl.stages import demo

    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["reproduce", "nw-ucla", "--raw", str(empty)])
    assert result.exit_code != 0 and f"{empty}: no NW-UCLA .json recordings" in result.output
    raw = tmp_path / "raw"
    raw.mkdir()
    work = demo.create_workspace(tmp_path / "work", "nw-ucla", {"nw-ucla": raw})
    params = yaml.safe_load((work / "params.yaml").read_text())
    assert params["raw"] == {"nw-ucla": str(raw.resolve())}
    assert params["splits"] == ["nw-ucla-xview"]
    assert params["views"]["variants"][0] == "upto50-bodyframe+minmax"
    table8 = {"untrained", "cml", "ser", "cml-ser-joint", "cml-pretrain-ser", "ser-pretrain-cml",
              "ser-distill-cml", "crrl"}
    continued = {e["run"] for e in params["continued"]}
    assert table8 <= set(params["runs"]) | continued
    # CRRL's seeds, and STARS from MAMP
    assert continued - table8 == {"crrl-seed1", "crrl-seed2", "crrl-cml-seed1", "stars-joint"}
    assert (work / "dvc.yaml").read_text() == (demo.PROJECT / "dvc.yaml").read_text()
    assert (work / "skelctl" / "methods" / "crrl.py").is_file() and (work / ".dvc").is_dir()
    # within the hour (no --full): the profile's reproduce.runs and the runs they start from
    quick = yaml.safe_load((demo.create_workspace(tmp_path / "quick", "nw-ucla", {
        "nw-ucla": raw}, full=False) / "params.yaml").read_text())
    assert list(quick["runs"]) == ["untrained", "cml", "ser"] and "reproduce" not in quick
    assert [e["run"] for e in quick["continued"]] == ["crrl"] and quick["ensembles"] == []
    # the paper rows of the runs it keeps, and no row of a run it leaves out
    assert quick["reproduces"] == {
        "untrained": {"CRRL VIII": "Rand-Enc", "CRRL IX": "Rand-Enc"},
        "cml": {"CRRL VIII": "CML", "CRRL IX": "Velocity (the proposed)"},
        "ser": {"CRRL VIII": "SER", "CRRL X": "SER(forward+reverse)"},
        "crrl": {"CRRL VIII": "CRRL", "CRRL V": "CRRL", "CRRL VI": "CRRL"}}
    assert demo.select_runs(params, ["ser-distill-cml"])["runs"].keys() == {"ser"}
    with pytest.raises(StageError, match="reproduce.runs names run.s. the profile lacks: nope"):
        demo.select_runs(params, ["nope"])
