"""STARS: NNCLR's loss by hand, the support queue (own entries excluded, FIFO with wrap-around),
which parameters it tunes and at what learning rate, the start from a MAMP encoder, one encoder
pass for identical copies, learning on a fixed batch, and its entry in params."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from skelctl.data.views import compute_view
from skelctl.methods import OptionsError, build_method
from skelctl.methods.losses import nnclr_loss
from skelctl.methods.stars import STARS
from skelctl.skeletons import NTU25
from skelctl.stages.common import StageError
from skelctl.stages.config import resolve_run
from skelctl.train import optimizer_groups

from conftest import gen

# 4 blocks of width 16 over tokens of 2 of 8 frames: blocks 2 and 3 are the second half
ENCODER = {"dim": 16, "depth": 4, "heads": 2, "t_patch": 2, "frames": 8}
SMALL = {"queue_size": 8, "predictor_hidden": 32}
# a random rotation after the whole-sequence crop: the two copies differ
ROTATED = {"crop_resize": {"min_ratio": 1.0, "max_ratio": 1.0, "min_frames": 1},
           "rotate": {"max_degrees": 30.0, "minor_degrees": 30.0, "symmetric": True}}


def stars(seed: int = 0, **options) -> STARS:
    torch.manual_seed(seed)
    return build_method("stars", ("joint",), NTU25, 1, "transformer", ENCODER,
                        {**SMALL, **options})


def batch(n: int = 6, length: int = 12, seed: int = 1) -> dict[str, torch.Tensor]:
    """Zero-padded real-frame sequences with their store indices, as the training loop gives
    them."""
    lengths = torch.tensor([length - i % 3 for i in range(n)])
    x = torch.randn(n, 3, length, 25, 1, generator=gen(seed))
    x = x * (torch.arange(length)[None] < lengths[:, None])[:, None, :, None, None]
    return {"sequence": x, "length": lengths, "index": torch.arange(100, 100 + n)}


# --- the loss and the support queue -----------------------------------------------------------

def test_nnclr_loss_by_hand():
    neighbours = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    predictions = torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]])
    # similarities / 0.5: row i is neighbour i against every prediction, the target is i
    logits = [[1.6, 0.0, 2.0], [1.2, 2.0, 0.0], [1.92, 1.6, 1.2]]
    by_hand = np.mean([math.log(sum(math.exp(v) for v in row)) - row[i]
                       for i, row in enumerate(logits)])
    assert by_hand == pytest.approx(0.98853353, abs=1e-7)
    assert float(nnclr_loss(neighbours, predictions, 0.5)) == pytest.approx(by_hand, abs=1e-6)


def test_a_sample_is_never_its_own_neighbour():
    method = stars(queue_size=4)
    e0, e1 = torch.eye(16)[0], torch.eye(16)[1]
    closer = torch.nn.functional.normalize(e0 + 0.5 * e1, dim=0)
    method.queue.copy_(torch.stack([e0, closer, e1, -e0]))
    method.queue_ids.copy_(torch.tensor([7, 3, 2, -1]))
    projections = torch.stack([e0, e0, e1])
    ids = torch.tensor([7, 5, 2])
    found = method.neighbours(projections, ids)
    # sample 7's most similar entry is its own: the second most similar comes back; sample 5
    # has no entry of its own; sample 2's own entry (e1 itself) is passed over for `closer`
    torch.testing.assert_close(found, torch.stack([closer, e0, closer]))


def test_enqueue_is_fifo_with_wrap_around_and_keeps_the_ids():
    method = stars(queue_size=4)

    def rows(ids):  # a projection that shows its sample's id
        return torch.tensor(ids, dtype=torch.float32)[:, None].expand(-1, 16)

    method.enqueue(rows([10, 11, 12]), torch.tensor([10, 11, 12]))
    assert method.queue_ids.tolist() == [10, 11, 12, -1] and int(method.queue_ptr) == 3
    method.enqueue(rows([13, 14, 15]), torch.tensor([13, 14, 15]))  # wraps to the front
    assert method.queue_ids.tolist() == [14, 15, 12, 13] and int(method.queue_ptr) == 2
    torch.testing.assert_close(method.queue[:, 0], torch.tensor([14.0, 15.0, 12.0, 13.0]))
    # more than the queue holds: the last four, from the pointer on
    method.enqueue(rows(list(range(20, 26))), torch.arange(20, 26))
    assert method.queue_ids.tolist() == [24, 25, 22, 23] and int(method.queue_ptr) == 2
    torch.testing.assert_close(method.queue[:, 0], torch.tensor([24.0, 25.0, 22.0, 23.0]))


# --- what it tunes -----------------------------------------------------------------------------

def ids(parameters) -> set[int]:
    return {id(p) for p in parameters}


def test_tunes_the_second_half_the_final_norm_and_the_heads():
    method = stars()
    encoder = method.encoder
    tuned = ids(p for group in method.tuned_parameters(method) for p in group["params"])
    heads = [*method.projector.parameters(), *method.predictor.parameters()]
    assert tuned == ids([*encoder.blocks[2].parameters(), *encoder.blocks[3].parameters(),
                         *encoder.norm.parameters(), *heads])
    frozen = [*encoder.patch_embed.parameters(), encoder.spatial_position,
              encoder.temporal_position, *encoder.blocks[0].parameters(),
              *encoder.blocks[1].parameters()]
    assert not tuned & ids(frozen)
    every = stars(tuned_blocks="all")  # the code's fully_tune: every block, not the embeddings
    embeddings = ids([*every.encoder.patch_embed.parameters(), every.encoder.spatial_position,
                      every.encoder.temporal_position])
    assert ids(p for group in every.tuned_parameters(every) for p in group["params"]) \
        == ids(every.parameters()) - embeddings


def test_layer_decay_gives_block_i_lr_times_decay_to_the_depth_minus_i():
    """The authors' base_lr * layer_decay ** (depth - block) through the training loop's
    groups: blocks 2 and 3 of 4 at 0.45^2 and 0.45, the final norm and the heads at lr."""
    method = stars()
    phase = method.phases(10, 1e-3, [], 0.1, 0.9, 0.05)[0]
    groups = optimizer_groups(method, phase.groups(method), 1e-3, True, 0.45)
    lr_of = {id(p): group["lr"] for group in groups for p in group["params"]}
    encoder = method.encoder
    for block, scale in ((2, 0.45 ** 2), (3, 0.45)):
        for p in encoder.blocks[block].parameters():
            assert lr_of[id(p)] == pytest.approx(1e-3 * scale)
    for p in [*encoder.norm.parameters(), *method.projector.parameters(),
              *method.predictor.parameters()]:
        assert lr_of[id(p)] == pytest.approx(1e-3)
    assert len(lr_of) == len(ids(p for g in phase.groups(method) for p in g["params"]))
    # adamw's rule: no weight decay on biases and norm weights
    decay_of = {id(p): group.get("weight_decay") for group in groups for p in group["params"]}
    assert decay_of[id(encoder.blocks[3].mlp[0].bias)] == 0.0
    assert decay_of[id(encoder.norm.weight)] == 0.0
    assert decay_of[id(encoder.blocks[3].mlp[0].weight)] is None  # the phase's 0.05


def test_starts_from_the_mamp_encoder_exactly():
    torch.manual_seed(5)
    mamp = build_method("mamp", ("joint",), NTU25, 1, "transformer", ENCODER,
                        {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2})
    method = stars()
    given = mamp.encoders()["joint"].state_dict()
    assert not all(torch.equal(v, method.encoder.state_dict()[k]) for k, v in given.items())
    method.start_from(mamp.encoders(), "mamp-x")
    tuned = method.encoder.state_dict()
    assert tuned.keys() == given.keys()
    assert all(torch.equal(tuned[k], v) for k, v in given.items())
    assert method.started_from == "mamp-x"
    assert method.encoders() == {"joint": method.encoder}
    with torch.no_grad():  # a copy: the MAMP run's encoder is left as it is
        method.encoder.norm.weight.add_(1.0)
    assert not torch.equal(mamp.encoders()["joint"].norm.weight, method.encoder.norm.weight)


# --- the forward pass --------------------------------------------------------------------------

def count_encoder_calls(method: STARS) -> list[int]:
    calls = [0]
    method.encoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def copies(method: STARS, data: dict[str, torch.Tensor], seed: int) -> list[torch.Tensor]:
    """The two inputs a forward pass with ``gen(seed)`` draws."""
    generator = gen(seed)
    return [compute_view("joint", method.augment(data["sequence"], generator,
                                                 lengths=data["length"]), NTU25)
            for _ in range(2)]


def test_identical_copies_run_the_encoder_once_and_give_the_loss_by_hand():
    method, data = stars(), batch()
    first, second = copies(method, data, 3)
    assert torch.equal(first, second) and first.shape == (6, 3, 8, 25, 1)
    with torch.no_grad():
        predictions, projections = method.embed(first)
        expected = nnclr_loss(method.neighbours(projections, data["index"]), predictions, 0.07)
    calls = count_encoder_calls(method)
    loss = method(data, gen(3), 0)["loss"]
    assert calls[0] == 1
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    # the first copy's projections joined the queue under their samples' ids
    assert method.queue_ids[:6].tolist() == data["index"].tolist()
    torch.testing.assert_close(method.queue[:6], projections)


def test_differing_copies_run_the_encoder_twice_and_pair_each_neighbour_with_the_other_copy():
    method, data = stars(augment=ROTATED), batch()
    first, second = copies(method, data, 4)
    assert not torch.equal(first, second)
    with torch.no_grad():
        p1, z1 = method.embed(first)
        p2, z2 = method.embed(second)
        index = data["index"]
        expected = (nnclr_loss(method.neighbours(z2, index), p1, 0.07)
                    + nnclr_loss(method.neighbours(z1, index), p2, 0.07)) / 2
    calls = count_encoder_calls(method)
    loss = method(data, gen(4), 0)["loss"]
    assert calls[0] == 2
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_a_stars_from_a_mamp_encoder_learns_on_a_fixed_batch():
    """Twenty steps of the authors' optimiser over the tuned parameters on 16 sequences of four
    kinds: the loss falls well below chance (log 16 = 2.77). Measured: 2.81 at the first step,
    2.48 over the first five, 1.64 over the last five."""
    narrow = {"dim": 16, "depth": 2, "heads": 2, "t_patch": 2, "frames": 8}
    torch.manual_seed(0)
    mamp = build_method("mamp", ("joint",), NTU25, 1, "transformer", narrow,
                        {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2})
    torch.manual_seed(1)
    method = build_method("stars", ("joint",), NTU25, 1, "transformer", narrow,
                          {"queue_size": 32, "predictor_hidden": 32})
    method.start_from(mamp.encoders(), "mamp")
    kinds = torch.arange(16) % 4
    x = torch.randn(16, 3, 12, 25, 1, generator=gen(3)) * 0.1 + kinds[:, None, None, None,
                                                                        None] * 0.5
    data = {"sequence": x, "length": torch.full((16,), 12), "index": torch.arange(16)}
    groups = optimizer_groups(method, method.tuned_parameters(method), 1e-3, True, 0.45)
    optimiser = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)
    losses = []
    for step in range(20):
        loss = method(data, gen(step), 0)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.75 * first and last < math.log(16) - 0.7


# --- its entry in params -----------------------------------------------------------------------

def params_with_stars(encoder: str, encoder_options: dict) -> dict:
    return {
        "runs": {"mamp-x": {"method": "mamp", "streams": ["joint"], "variant": "120-seqcentre",
                            "encoder": "transformer", "encoder_options": ENCODER}},
        "continued": [{"run": "stars-x", "start": "mamp-x", "method": "stars",
                       "streams": ["joint"], "variant": "120-seqcentre", "encoder": encoder,
                       "encoder_options": encoder_options, "options": {"queue_size": 64},
                       "train": {"epochs": 10, "optimizer": "adamw", "lr": 0.001,
                                 "weight_decay": 0.05, "layer_decay": 0.45, "lr_steps": [],
                                 "grad_clip": 3.0}}]}


def test_a_continued_stars_run_starts_from_its_mamp_run():
    run = resolve_run(params_with_stars("transformer", ENCODER), "params.yaml", "stars-x")
    assert (run.method, run.start, run.encoder) == ("stars", "mamp-x", "transformer")
    assert (run.train.optimizer, run.train.layer_decay, run.train.grad_clip) == ("adamw", 0.45,
                                                                                 3.0)
    method = run.build(NTU25, 2)
    assert isinstance(method, STARS)
    assert method.options.queue_size == 64 and method.options.tuned_blocks == "second_half"


def test_options_it_refuses():
    document = params_with_stars("stgcn", {"hidden": 4, "out_dim": 8})
    with pytest.raises((OptionsError, StageError),
                       match="STARS tunes a transformer: it needs encoder 'transformer', not "
                             "STGCN"):
        resolve_run(document, "params.yaml", "stars-x").build(NTU25, 2)
    with pytest.raises(OptionsError, match="tuned_blocks: expected one of second_half, all"):
        stars(tuned_blocks="first_half")
    with pytest.raises(OptionsError, match="its chain needs crop_resize"):
        stars(augment={"rotate": {}})
