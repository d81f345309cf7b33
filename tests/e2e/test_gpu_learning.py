"""ISC and PCM3 learn on real recordings (NW-UCLA, the profile's settings): each run takes an hour
or more on a CPU, too long for CI, so these run where a GPU is (`pytest -m gpu`) and are skipped,
with the reason, elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import NW_UCLA, PROJECT, need, write_params

pytestmark = [pytest.mark.slow, pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA GPU: an hour or more per run on a CPU")]

SPLIT = "nw-ucla-xview"


@pytest.fixture(scope="module")
def nw_ucla_64(tmp_path_factory) -> Path:
    """NW-UCLA in the body's frame, 64 frames and the real sequences (ISC's and PCM3's input)."""
    from skelctl.stages import prepare

    data = tmp_path_factory.mktemp("nw-ucla") / "data"
    prepare.run("nw-ucla", need(NW_UCLA), data, variants=("64-bodyframe",), jobs=8,
                max_bodies=1, view_names=("joint",))
    return data


def profile_params(folder: Path) -> Path:
    """params.nw-ucla.yaml, its runs on the GPU."""
    params = yaml.safe_load((PROJECT / "params.nw-ucla.yaml").read_text())
    params["defaults"]["train"]["device"] = "cuda"
    params["knn"]["device"] = "cuda"
    return write_params(folder, params)


@pytest.mark.parametrize("run, untrained, encoder", [
    ("pcm3-joint", "untrained-pcm3", "joint"),         # 40 epochs, about 4 minutes on an H200
    ("isc", "untrained-isc", "joint.bigru"),           # 140 epochs, about 5 minutes
])
def test_beats_the_untrained_sequence_encoder_under_knn(nw_ucla_64, tmp_path, run, untrained,
                                                        encoder):
    from skelctl.stages import evaluate, pretrain

    params = profile_params(tmp_path)
    models, results = tmp_path / "models", tmp_path / "results"
    accuracy = {}
    for name in (untrained, run):
        pretrain.run(SPLIT, name, nw_ucla_64, models, params, {})
        knn = evaluate.run_knn(SPLIT, name, nw_ucla_64, models, results, params, {})
        accuracy[name] = knn[encoder]["top1"]
    assert accuracy[run] > accuracy[untrained] + 3, accuracy
