"""Does the data fit its joint layout? A check from the recordings themselves.

Three statistics per bone of the layout (child joint, parent joint), each the median over the
sequences checked, on body 0's tracked joints:

- *nearness*: the rank of the parent among the joints nearest the child (distances averaged over
  a sequence's frames; 0 = the nearest). A bone joins neighbours; a joint order that is not the
  layout's joins joints across the body. This is the statistic the verdict rests on: on real
  NW-UCLA recordings the true order's bones have median rank 0 and at most 8 of 18, a shuffled
  order's median is 9, and a reversed trunk (head first) gives two bones of rank 14.
- *stability*: the coefficient of variation of the bone's length over a sequence's frames (a limb
  keeps its length; the distance between two unrelated joints changes as the body moves);
- *symmetry*: for the left and right copy of a bone (the layout's mirror pairs), the difference of
  their mean lengths relative to their average.

A bone is suspicious when its parent ranks beyond ``far`` of the other joints, or when its
length varies or differs from its mirror image beyond the limits; the layout does not fit when a
bone is suspicious or the bones' median rank exceeds ``typical``. The joints touching the most
suspicious bones are named. Stability and symmetry are loose limits: standing actions keep even
unrelated joints at nearly constant distances, so they catch gross errors only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from skelctl.skeletons import Layout


@dataclass(frozen=True)
class Limits:
    far: float = 0.6         # parent's nearness rank / (joints - 2)
    typical: float = 0.25    # median over bones of that fraction
    variation: float = 0.6   # bone length std / mean over a sequence
    asymmetry: float = 0.5   # |left - right| / mean of the mirror bones' lengths


@dataclass
class JointOrderReport:
    fits: bool
    checked: int                       # sequences
    suspicious_joints: list[str] = field(default_factory=list)
    bones: list[dict] = field(default_factory=list)  # one per suspicious bone
    median_rank: float = 0.0

    def message(self, layout_name: str) -> str:
        if self.fits:
            return (f"joint order fits layout {layout_name} ({self.checked} sequences checked: "
                    f"bones join near joints, median nearness rank {self.median_rank:g})")
        bones = "; ".join(f"{b['child']}-{b['parent']} ({', '.join(b['why'])})"
                          for b in self.bones[:5])
        return (f"warning: the data may not fit layout {layout_name}: most suspicious joints "
                f"{', '.join(self.suspicious_joints[:6]) or '(none singled out)'}; "
                f"median nearness rank of a bone's parent {self.median_rank:g}"
                + (f"; bones {bones}" if bones else "")
                + ". Check the joint order of the files against the layout's (skelctl layouts)")

    def to_dict(self) -> dict:
        return {"fits": self.fits, "checked": self.checked,
                "suspicious_joints": self.suspicious_joints, "bones": self.bones,
                "median_rank": self.median_rank}


def bone_statistics(frames: np.ndarray, offsets: np.ndarray, layout: Layout
                    ) -> dict[str, np.ndarray]:
    """Per bone of ``layout``: median nearness rank, length variation and mirror asymmetry over
    the sequences of a ragged batch ``frames`` ``(F, C, V, M)`` (body 0)."""
    x = frames[:, :, :, 0].transpose(0, 2, 1).astype(np.float32)  # (F, V, C)
    present = x.any(axis=2)  # (F, V)
    offsets = np.asarray(offsets, dtype=np.int64)
    starts = offsets[:-1]
    distance = np.linalg.norm(x[:, :, None] - x[:, None, :], axis=-1)  # (F, V, V)
    both = (present[:, :, None] & present[:, None, :]).astype(np.float32)
    count = np.add.reduceat(both, starts, axis=0)  # (n, V, V)
    mean = np.add.reduceat(distance * both, starts, axis=0) / np.maximum(count, 1)
    square = np.add.reduceat(distance ** 2 * both, starts, axis=0) / np.maximum(count, 1)
    std = np.sqrt(np.maximum(square - mean ** 2, 0))
    v = layout.num_joints
    unseen = count == 0
    ranked = np.where(unseen | np.eye(v, dtype=bool), np.inf, mean)
    rank = np.argsort(np.argsort(ranked, axis=2), axis=2)  # rank of joint j among c's neighbours
    child, parent = np.array(layout.edges).T
    seen = ~unseen[:, child, parent]  # (n, E): sequences in which the bone was tracked

    def median(values: np.ndarray) -> np.ndarray:
        """Over the sequences that tracked the bone (NaN for a bone none tracked)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN
            return np.nanmedian(np.where(seen, values, np.nan), axis=0)

    lengths = mean[:, child, parent]
    variation = median(std[:, child, parent] / np.maximum(lengths, 1e-9))
    index = {edge: e for e, edge in enumerate(layout.edges)}
    flip = np.array(layout.flip) if layout.flip else np.arange(v)
    mirror = np.array([index.get((int(flip[c]), int(flip[p])), e)
                       for e, (c, p) in enumerate(layout.edges)])
    pair_mean = (lengths + lengths[:, mirror]) / 2
    asymmetry = median(np.abs(lengths - lengths[:, mirror]) / np.maximum(pair_mean, 1e-9))
    return {"rank": median(rank[:, child, parent].astype(np.float64)), "variation": variation,
            "asymmetry": asymmetry}


def check_joint_order(frames: np.ndarray, offsets: np.ndarray, layout: Layout,
                      limits: Limits = Limits()) -> JointOrderReport | None:
    """Whether the sequences fit ``layout`` (None for a layout without bones)."""
    if not layout.has_graph or len(offsets) < 2:
        return None
    stats = bone_statistics(frames, offsets, layout)
    names = layout.joint_names
    span = max(layout.num_joints - 2, 1)
    rank = stats["rank"] / span
    bones, blame = [], np.zeros(layout.num_joints)
    for e, (c, p) in enumerate(layout.edges):
        why = []
        if rank[e] > limits.far:
            why.append(f"the parent is no. {int(stats['rank'][e]) + 1} of the child's nearest "
                       f"joints")
        if stats["variation"][e] > limits.variation:
            why.append(f"length varies by {stats['variation'][e]:.0%}")
        if stats["asymmetry"][e] > limits.asymmetry:
            why.append(f"{stats['asymmetry'][e]:.0%} longer or shorter than its mirror bone")
        if why:
            bones.append({"child": names[c], "parent": names[p], "why": why,
                          "rank": float(stats["rank"][e])})
            blame[[c, p]] += len(why) + rank[e]
    bones.sort(key=lambda b: -b["rank"])
    median_rank = float(np.nanmedian(stats["rank"]))
    fits = not bones and median_rank / span <= limits.typical
    if not fits and not bones:  # no single bone stands out: blame each by its nearness rank
        for e, (c, p) in enumerate(layout.edges):
            blame[[c, p]] += rank[e]
    suspicious = [names[j] for j in np.argsort(-blame, kind="stable") if blame[j] > 0]
    return JointOrderReport(fits, len(offsets) - 1, [] if fits else suspicious, bones,
                            median_rank)


def sample_rows(n: int, limit: int = 300) -> np.ndarray:
    """At most ``limit`` sample indices spread evenly over ``n``."""
    return np.unique(np.linspace(0, n - 1, min(n, limit)).astype(np.int64))
