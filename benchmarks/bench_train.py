"""Benchmark of the learning core: training-step throughput and how close it runs to the machine.

Prints, from one run on one machine:
- the machine's fp32 matrix-multiply rate (GFLOP/s, torch.mm of square matrices);
- a SkeletonCLR training step (ST-GCN, batch 64, 50 frames, 2 bodies) in fp32 and bf16
  (autocast), as samples/s, with the step's FLOPs counted by torch.utils.flop_counter and its
  achieved GFLOP/s as a fraction of the matrix-multiply rate; on a CPU also the share of the
  step spent in convolution and matrix-product kernels and their own rate, which bounds what
  the whole step can reach; then AimCLR's, CrosNNCLR's and CrosNNCLR*'s steps beside it (fp32 and
  bf16), so the cost of their extra views and passes shows;
- the ISC authors' causal BiGRU (3 layers x 1024 per direction, both directions reading forward
  in time) as whole-sequence calls (two per layer, the `bigru` encoder) against their per-frame
  Python loop of the same nn.GRU carrying the hidden state, with the same weights and batch
  (64 x 64 frames x 150 inputs, forward and backward), and the truly bidirectional GRU in one call
  beside them, with the weight bytes each reads per time step (the bound on the ratio when weight
  reads dominate); at 1024 units, and also at 256 when a 1024 step is too slow for the whole
  comparison to take about a minute (then 1024 is timed once);
- ISC's step (sequence + graph from crops of the real frames, fp32 and bf16) beside SkeletonCLR's,
  at the NW-UCLA profile's widths and once at the paper's, and PCM3's on the narrow GRU;
- MAMP's and STARS' steps on the skeleton transformer (crops of the real frames to 120) at the
  NW-UCLA profile's width and at the paper's;
- KNN retrieval (k = 1, cosine) in test samples/s.

    python benchmarks/bench_train.py                 # CPU (or --device cuda)
    python benchmarks/bench_train.py --only transformer   # SkeletonCLR's step and MAMP's, STARS' 
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from skelctl.evaluate.knn import nearest_neighbours
from skelctl.methods import build_method
from skelctl.models import build_encoder
from skelctl.skeletons import NTU25
from skelctl.train import amp_available, amp_precision


def timed(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Best wall time of ``fn`` over ``repeats`` runs, after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_rate(device: torch.device, size: int = 2048) -> float:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    seconds = timed(lambda: a @ b, device, repeats=10, warmup=3)
    return 2 * size ** 3 / seconds / 1e9


# the kernels that carry the multiply-add FLOPs counted by FlopCounterMode
PRODUCT_KERNELS = {"aten::mkldnn_convolution", "aten::convolution_backward", "aten::mm",
                   "aten::bmm", "aten::addmm", "aten::baddbmm"}


def product_kernel_seconds(fn) -> tuple[float, float]:
    """Seconds of one CPU run of ``fn`` spent in convolution/matrix-product kernels, and in all."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    products = sum(e.self_cpu_time_total for e in events if e.key in PRODUCT_KERNELS)
    return products / 1e6, total / 1e6


def method_step(name: str, device: torch.device, batch: int, amp: bool,
                encoder: str | list[str] = "stgcn", encoder_options: dict | None = None,
                options: dict | None = None):
    """One training step of a method with the paper's options (ST-GCN, 50 frames, 2 bodies; a
    method that reads the real sequences gets 50 to 100 frames of them)."""
    torch.manual_seed(0)
    method = build_method(name, ("joint",), NTU25, 2, encoder, encoder_options,
                          options).to(device)
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1,
                                momentum=0.9, weight_decay=1e-4)
    data = {"joint": torch.randn(batch, 3, 50, 25, 2, device=device),
            "index": torch.arange(batch, device=device)}
    if method.sequences:
        data["length"] = torch.randint(50, 101, (batch,), device=device)
        valid = torch.arange(100, device=device)[None] < data["length"][:, None]
        data["sequence"] = torch.randn(batch, 3, 100, 25, 2, device=device) \
            * valid[:, None, :, None, None]
    generator = torch.Generator(device=device).manual_seed(0)
    dtype = amp_precision(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            # epoch 0: CrosNNCLR's neighbours are on, AimCLR's mining (a mask over the same
            # similarities) not yet
            loss = method(data, generator, 0)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.float().backward()
        optimizer.step()

    return step


class PerFrameBiGRU(nn.Module):
    """The reference code's BiGRU: the same nn.GRU, fed one frame at a time in a Python loop."""

    def __init__(self, size: int = 150, hidden: int = 1024, layers: int = 3):
        super().__init__()
        self.gru = nn.GRU(size, hidden, num_layers=layers, bidirectional=True, batch_first=True)
        self.out_dim = 2 * hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, v, m = x.shape
        seq = x.permute(0, 2, 3, 1, 4).reshape(n, t, v * c * m)
        state = None
        for frame in range(t):
            out, state = self.gru(seq[:, frame:frame + 1], state)
        return out[:, -1]


def encoder_step(encoder: nn.Module, device: torch.device, batch: int, frames: int):
    encoder.to(device)
    head = nn.Linear(encoder.out_dim, 60).to(device)
    optimizer = torch.optim.SGD([*encoder.parameters(), *head.parameters()], lr=0.01)
    data = torch.randn(batch, 3, frames, 25, 2, device=device)
    labels = torch.randint(0, 60, (batch,), device=device)

    def step() -> None:
        loss = nn.functional.cross_entropy(head(encoder(data)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def gru_comparison(device: torch.device, batch: int, frames: int, hidden: int,
                   repeats: int) -> None:
    """The causal BiGRU as whole-sequence calls against the authors' per-frame loop (same
    weights, same batch), and the truly bidirectional GRU in one call, at ``hidden`` units."""
    torch.manual_seed(0)
    causal = build_encoder("bigru", NTU25, 2, hidden=hidden)
    bidirectional = build_encoder("bigru", NTU25, 2, hidden=hidden, direction="bidirectional")
    loop = PerFrameBiGRU(hidden=hidden)
    bidirectional.rnn.load_state_dict(causal.rnn.state_dict())
    loop.gru.load_state_dict(causal.rnn.state_dict())
    # fewer timed runs where one step is slow (a CPU at 1024 units), so this stays near a minute
    warmup = 1 if repeats > 1 else 0
    times = {name: timed(encoder_step(model, device, batch, frames), device, repeats, warmup)
             for name, model in (("causal", causal), ("loop", loop),
                                 ("bidirectional", bidirectional))}
    rate = {name: batch / seconds for name, seconds in times.items()}
    print(f"BiGRU step, 3 x {hidden} per direction, batch {batch}, {frames} frames, forward and "
          f"backward{'' if repeats > 1 else ', timed once'}: causal as whole-sequence calls "
          f"{rate['causal']:.2f} samples/s, the authors' per-frame loop {rate['loop']:.2f} "
          f"samples/s: {times['loop'] / times['causal']:.1f}x; truly bidirectional in one call "
          f"{rate['bidirectional']:.2f} samples/s ({times['causal'] / times['bidirectional']:.2f}x"
          f" the causal form's speed)")
    # The FLOPs are the same every way; the sequence calls compute every input product in one
    # matrix product over all frames, so per time step they read only the recurrent weights.
    weights = dict(causal.rnn.named_parameters())
    recurrent = sum(p.numel() * 4 for n, p in weights.items() if "weight_hh" in n)
    inputs = sum(p.numel() * 4 for n, p in weights.items() if "weight_ih" in n)
    print(f"  weights read per time step: loop {(recurrent + inputs) / 1e6:.0f} MB, sequence calls "
          f"{recurrent / 1e6:.0f} MB: at most {(recurrent + inputs) / recurrent:.1f}x where weight "
          f"reads dominate (small batches on a CPU)")


def gru_comparisons(device: torch.device, batch: int, frames: int, repeats: int) -> None:
    """At 1024 units; where one causal step there is too slow for the comparison (three models,
    a warm-up and ``repeats`` steps each) to take about a minute, 1024 is timed once and 256
    units measured too."""
    torch.manual_seed(0)
    probe = encoder_step(build_encoder("bigru", NTU25, 2), device, batch, frames)
    step_seconds = timed(probe, device, repeats=1, warmup=0)
    slow = step_seconds * 3 * (1 + repeats) > 60
    if slow:
        print(f"BiGRU: one causal step at 1024 units takes {step_seconds:.1f} s here, so 1024 is "
              f"timed once and 256 units are measured too")
    gru_comparison(device, batch, frames, 1024, 1 if slow else repeats)
    if slow:
        gru_comparison(device, batch, frames, 256, repeats)


SECTIONS = ["methods", "isc", "pcm3", "transformer", "gru", "knn"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gru-batch", type=int, default=64)
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS,
                        help="the sections to time after SkeletonCLR's step (default: all)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads\n")

    rate = matmul_rate(device)
    print(f"fp32 matrix multiply (2048^3): {rate:.1f} GFLOP/s")

    batch = 64
    step = method_step("skeletonclr", device, batch, amp=False)
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    fp32 = timed(step, device, args.repeats)
    achieved = flops / fp32 / 1e9
    print(f"SkeletonCLR step, ST-GCN, batch {batch}, 50 frames, 2 bodies, fp32: "
          f"{batch / fp32:.1f} samples/s, {flops / 1e9:.1f} GFLOP per step, {achieved:.1f} GFLOP/s "
          f"= {achieved / rate:.0%} of the matrix-multiply rate")
    if device.type == "cpu":
        products, total = product_kernel_seconds(step)
        kernel_rate = flops / products / 1e9
        print(f"  convolution and matrix-product kernels: {products / total:.0%} of the step, at "
              f"{kernel_rate:.1f} GFLOP/s = {kernel_rate / rate:.0%} of the matrix-multiply rate; "
              f"the rest (batch norm, dropout, ReLU, augmentation, copies) does no multiplies, "
              f"so the whole step cannot pass {kernel_rate / rate:.0%}")
    bf16 = timed(method_step("skeletonclr", device, batch, amp=True), device, args.repeats)
    label = "bf16" if amp_precision(device) == torch.bfloat16 else "fp16"
    print(f"SkeletonCLR step, {label} autocast: {batch / bf16:.1f} samples/s = "
          f"{fp32 / bf16:.2f}x fp32")
    # the cost of each method's extra views and passes, beside SkeletonCLR's (same batch)
    methods = (("aimclr", "3 views: normal query and key, extreme twice (plain, D3M)"),
               ("crosnnclr", "2 views, nearest neighbours in the queue"),
               ("crosnnclr_star", "AimCLR's views + nearest neighbours"))
    for name, what in methods if "methods" in args.only else ():
        times = {amp: timed(method_step(name, device, batch, amp), device, args.repeats)
                 for amp in (False, True)}
        print(f"{name} step ({what}): fp32 {batch / times[False]:.1f} samples/s "
              f"({fp32 / times[False]:.2f}x SkeletonCLR's), {label} {batch / times[True]:.1f} "
              f"samples/s ({bf16 / times[True]:.2f}x SkeletonCLR's {label})")

    # ISC (sequence + graph, crops of the real frames to 64) at the NW-UCLA profile's widths,
    # and once at the paper's (a 45 M-parameter GRU and the full A-GCN)
    for label_isc, options, repeats in () if "isc" not in args.only else (
            ("GRU 3 x 256 + A-GCN hidden 16", {"bigru": {"hidden": 256}, "agcn": {"hidden": 16}},
             args.repeats),
            ("the paper's GRU 3 x 1024 + A-GCN hidden 64", {},
             args.repeats if device.type == "cuda" else 1)):
        times = {amp: timed(method_step("isc", device, batch, amp, ["bigru", "agcn"], options),
                            device, repeats, warmup=0 if repeats == 1 else 1)
                 for amp in (False, True)}
        print(f"isc step ({label_isc}): fp32 {batch / times[False]:.1f} samples/s "
              f"({fp32 / times[False]:.2f}x SkeletonCLR's), {label} {batch / times[True]:.1f} "
              f"samples/s ({bf16 / times[True]:.2f}x SkeletonCLR's {label})")
    # PCM3 (three views, four positives, the decoder) on the GRU at the same narrow width, and on
    # a GPU at the paper's too (a CPU step there takes minutes)
    widths = [("GRU 3 x 256 with input batch norm", {"hidden": 256}, args.repeats)] \
        if "pcm3" in args.only else []
    if device.type == "cuda":
        widths.append(("the paper's GRU 3 x 1024 with input batch norm", {}, args.repeats))
    for label_pcm3, options, repeats in widths:
        times = {amp: timed(method_step("pcm3", device, batch, amp, "bigru",
                                        {**options, "input_norm": True}), device, repeats)
                 for amp in (False, True)}
        print(f"pcm3 step ({label_pcm3}): fp32 {batch / times[False]:.1f} samples/s "
              f"({fp32 / times[False]:.2f}x SkeletonCLR's), {label} {batch / times[True]:.1f} "
              f"samples/s ({bf16 / times[True]:.2f}x SkeletonCLR's {label})")

    # MAMP (90 % of the tokens masked, the decoder over all of them) and STARS (NNCLR on the mean
    # feature, the second half of the blocks tuned) on the skeleton transformer, from crops of
    # the real frames to 120 (30 x 25 tokens, 2 bodies): at the NW-UCLA profile's widths and at
    # the paper's (on a CPU one fp32 step each)
    # bf16 only where it is native (amp_available: a GPU, or a CPU with AVX512-BF16 or AMX),
    # as training uses it; elsewhere a bf16 step takes minutes and says nothing useful
    precisions = (False, True) if amp_available(device) else (False,)
    cuda = device.type == "cuda"
    narrow = {"dim": 128, "depth": 4, "heads": 4}
    narrow_decoder = {"decoder_dim": 128, "decoder_depth": 1, "decoder_heads": 4}
    for label_t, options, method_options, repeats in () if "transformer" not in args.only else (
            ("the NW-UCLA profile's: 128 wide, 4 blocks, decoder 128 x 1", narrow,
             {"mamp": narrow_decoder}, args.repeats),
            ("the paper's: 256 wide, 8 blocks, decoder 256 x 3", {}, {},
             args.repeats if cuda else 1)):
        for name in ("mamp", "stars"):
            times = {amp: timed(method_step(name, device, batch, amp, "transformer", options,
                                            method_options.get(name)),
                                device, repeats, warmup=0 if repeats == 1 else 1)
                     for amp in precisions}
            line = (f"{name} step ({label_t}): fp32 {batch / times[False]:.1f} samples/s "
                    f"({fp32 / times[False]:.2f}x SkeletonCLR's)")
            if True in times:
                line += (f", {label} {batch / times[True]:.1f} samples/s "
                         f"({bf16 / times[True]:.2f}x SkeletonCLR's {label})")
            print(line, flush=True)

    if "gru" in args.only:
        gru_comparisons(device, args.gru_batch, 64, args.repeats)
    if "knn" not in args.only:
        return

    train = torch.randn(40_000, 256, device=device)
    test = torch.randn(16_000, 256, device=device)
    knn = timed(lambda: nearest_neighbours(train, test, k=1), device, args.repeats)
    print(f"KNN (k=1, cosine), 40,000 train x 16,000 test x 256-d: {16_000 / knn:,.0f} test "
          f"samples/s ({knn:.2f} s)")


if __name__ == "__main__":
    main()
