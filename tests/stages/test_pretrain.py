"""The pretrain stage's checks and inputs: the queue-size warning and the store's real sequences."""

from __future__ import annotations


import torch

from skelctl.data.store import Store
from skelctl.methods import build_method
from skelctl.skeletons import NTU25



def test_a_queue_as_large_as_the_training_set_is_warned_about():
    from skelctl.stages.pretrain import queue_warning

    def crosclr(queue_size):
        return build_method("crosclr", ("joint", "motion"), NTU25, 2, encoder="gru",
                            encoder_options={"hidden": 8, "layers": 1},
                            options={"queue_size": queue_size})

    assert queue_warning(crosclr(99), 100) is None
    assert queue_warning(crosclr(100), 100) == (
        "warning: a queue of 100 keys for 100 training samples; every sample then meets its own "
        "earlier keys as negatives. Choose queue_size below 100 (a quarter of it, 25, suits small "
        "datasets).")
    assert queue_warning(build_method("untrained", ("joint",), NTU25, 2, encoder="gru",
                                      encoder_options={"hidden": 8, "layers": 1}), 1) is None


# --- 6. key projector momentum ------------------------------------------------------------------


def test_training_samples_carry_the_stores_real_sequences(prepared_ntu60):
    from skelctl.train import training_samples

    store = Store(prepared_ntu60 / "processed" / "ntu60" / "50-shoulder.h5")
    indices = store.split("xsub/train")[:6]
    samples = training_samples(store, indices, ("joint", "motion"), sequences=True)
    assert torch.equal(samples.arrays["index"], torch.from_numpy(indices))
    assert torch.equal(samples.arrays["motion"], torch.from_numpy(store.take("motion", indices)))
    batch = samples.batch(torch.tensor([4, 1]))
    for row, position in enumerate((4, 1)):
        real = torch.from_numpy(store.sequence(int(indices[position]))).permute(1, 0, 2, 3)
        length = real.shape[1]
        assert int(batch["length"][row]) == length
        assert torch.equal(batch["sequence"][row, :, :length], real)
        assert not batch["sequence"][row, :, length:].any()
    assert batch["label"].tolist() == store.meta(["label"])["label"][indices[[4, 1]]].tolist()
