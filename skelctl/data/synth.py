"""A synthetic corpus in the real raw formats, for tests, benchmarks and the demo.

Thirteen action classes differ only by how the body moves (waving one arm or the other, raising
both arms, squatting, jumping, walking in place, kicking, punching, turning round, bowing, and three
two-person interactions: pushing, hugging, shaking hands). Each sample varies in speed, amplitude,
phase and length; each subject has their own bone lengths; the three NTU cameras see the scene from
-45, 0 and +45 degrees. Sensor noise, runs of invalid frames, spurious extra bodies (a wide static
"furniture" track or a short flicker) and a few names from the official missing list are mixed in
so that every cleaning step has something to do. Everything is deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skelctl.data.formats.ntu import missing_skeletons

NUM_JOINTS = 25
# A kinematic tree rooted at the spine base (0-based NTU joint ids) and the rest offset of each
# joint from its tree parent, in metres (x: the person's left, y: up, z: forward).
TREE = (
    (1, 0, (0, 0.25, 0)), (20, 1, (0, 0.22, 0)), (2, 20, (0, 0.08, 0)), (3, 2, (0, 0.12, 0)),
    (4, 20, (0.17, -0.03, 0)), (5, 4, (0, -0.27, 0)), (6, 5, (0, -0.25, 0)),
    (7, 6, (0, -0.07, 0)), (21, 7, (0, -0.06, 0)), (22, 7, (0.02, -0.03, 0.03)),
    (8, 20, (-0.17, -0.03, 0)), (9, 8, (0, -0.27, 0)), (10, 9, (0, -0.25, 0)),
    (11, 10, (0, -0.07, 0)), (23, 11, (0, -0.06, 0)), (24, 11, (-0.02, -0.03, 0.03)),
    (12, 0, (0.09, -0.03, 0)), (13, 12, (0, -0.42, 0)), (14, 13, (0, -0.40, 0)),
    (15, 14, (0, -0.05, 0.10)),
    (16, 0, (-0.09, -0.03, 0)), (17, 16, (0, -0.42, 0)), (18, 17, (0, -0.40, 0)),
    (19, 18, (0, -0.05, 0.10)),
)
BONE_GROUP = {j: ("arm" if j in (5, 6, 7, 9, 10, 11, 21, 22, 23, 24) else
                  "leg" if j in (13, 14, 15, 17, 18, 19) else "torso") for j, _, _ in TREE}
MOTIONS = ("wave_right", "wave_left", "raise_arms", "squat", "jump", "walk", "kick", "punch",
           "turn", "bow", "push", "hug", "handshake")
TWO_PERSON = {"push", "hug", "handshake"}
CAMERA_YAW = {1: 0.0, 2: np.pi / 4, 3: -np.pi / 4}
# action ids (1-based, as in file names) given to the 13 motions in each release
ACTIONS = {
    "ntu60": (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 50, 51, 52),
    "ntu120": (1, 2, 3, 4, 5, 61, 62, 63, 64, 65, 50, 106, 107),
    "pku": tuple(range(1, 14)),
}


def rotation(axis: str, angle: np.ndarray) -> np.ndarray:
    """``(T, 3, 3)`` rotations about a coordinate axis."""
    angle = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(angle), np.zeros_like(angle)
    rows = {"x": ((o, z, z), (z, c, -s), (z, s, c)),
            "y": ((c, z, s), (z, o, z), (-s, z, c)),
            "z": ((c, -s, z), (s, c, z), (z, z, o))}[axis]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


@dataclass
class Performance:
    """How one performer moves in one sample: local joint rotations and root motion over time."""

    local: dict[int, np.ndarray]  # joint -> (T, 3, 3)
    root: np.ndarray  # (T, 3) translation
    yaw: np.ndarray  # (T,) rotation about y


def perform(motion: str, frames: int, rng: np.random.Generator, role: int = 0) -> Performance:
    """Joint rotations of one class, with random speed, amplitude and phase."""
    t = np.arange(frames) / 30.0
    cycles = rng.uniform(1.0, 2.5)
    phase = 2 * np.pi * cycles * t / t[-1] + rng.uniform(0, 0.5) if frames > 1 else np.zeros(1)
    osc = np.sin(phase)
    ramp = np.clip(t / max(t[-1], 1e-6) * 1.5, 0, 1)
    amp = rng.uniform(0.8, 1.2)
    local: dict[int, np.ndarray] = {}
    root = np.zeros((frames, 3))
    yaw = np.zeros(frames)
    if motion in ("wave_right", "wave_left"):
        side = 1 if motion == "wave_left" else -1
        shoulder, elbow = (4, 5) if side == 1 else (8, 9)
        local[shoulder] = rotation("z", side * amp * 2.4 * ramp)
        local[elbow] = rotation("z", side * 0.6 * amp * osc)
    elif motion == "raise_arms":
        lift = amp * 1.4 * (1 - np.cos(phase)) / 2
        local[4], local[8] = rotation("z", lift), rotation("z", -lift)
    elif motion in ("squat", "jump"):
        bend = amp * 0.9 * (1 - np.cos(phase)) / 2
        if motion == "jump":  # arms swing up with every jump
            lift = np.clip(np.sin(phase), 0, None)
            root[:, 1] = 0.25 * amp * lift
            local[4], local[8] = rotation("z", 2.0 * lift), rotation("z", -2.0 * lift)
            bend = bend * 0.4
        else:
            root[:, 1] = -0.35 * bend
        for hip, knee in ((12, 13), (16, 17)):
            local[hip], local[knee] = rotation("x", -bend), rotation("x", 2 * bend)
        local[1] = rotation("x", 0.3 * bend)
    elif motion == "walk":
        swing = amp * 0.6 * osc
        local[12], local[16] = rotation("x", -np.clip(swing, 0, None) * 1.5), \
            rotation("x", -np.clip(-swing, 0, None) * 1.5)
        local[13], local[17] = rotation("x", np.clip(swing, 0, None) * 2), \
            rotation("x", np.clip(-swing, 0, None) * 2)
        local[4], local[8] = rotation("x", swing * 0.6), rotation("x", -swing * 0.6)
    elif motion == "kick":
        kick = amp * 1.3 * np.clip(np.sin(phase), 0, None) ** 3
        local[16], local[17] = rotation("x", -kick), rotation("x", 0.3 * kick)
    elif motion == "punch":
        extend = np.clip(np.sin(phase), 0, None) ** 2
        local[8] = rotation("x", -amp * 1.5 * np.ones(frames))
        local[9] = rotation("x", -1.8 * (1 - extend))
    elif motion == "turn":  # turning round, looking over the shoulder, one arm pointing
        direction = rng.choice([-1, 1])
        yaw = amp * np.pi * ramp * direction
        local[2] = rotation("y", 0.8 * direction * np.sin(np.pi * ramp))
        local[8] = rotation("x", -1.3 * np.sin(np.pi * ramp))
    elif motion == "bow":
        local[1] = rotation("x", amp * 1.0 * (1 - np.cos(phase)) / 2)
        local[20] = rotation("x", amp * 0.3 * (1 - np.cos(phase)) / 2)
    else:  # two-person: performers face each other; role 0 acts, role 1 reacts
        approach = 0.35 * ramp * amp
        root[:, 2] = approach if role == 0 or motion != "push" else -approach * 0.5
        if motion == "push" and role == 0:
            reach = np.clip(np.sin(phase), 0, None)
            local[4], local[8] = rotation("x", -1.4 * reach), rotation("x", -1.4 * reach)
        elif motion == "hug":
            local[4], local[8] = rotation("x", -1.3 * ramp), rotation("x", -1.3 * ramp)
            local[5], local[9] = rotation("y", -1.2 * ramp), rotation("y", 1.2 * ramp)
        elif motion == "handshake":
            local[8] = rotation("x", -1.1 * ramp + 0.15 * osc * ramp)
            local[9] = rotation("x", -0.3 * ramp)
    return Performance(local, root, yaw)


def bone_scales(subject: int, seed: int) -> dict[str, float]:
    """Per-subject bone-length factors: overall stature and arm/leg/torso proportions."""
    rng = np.random.default_rng([seed, subject, 7])
    stature = rng.uniform(0.85, 1.15)
    return {g: stature * rng.uniform(0.92, 1.08) for g in ("arm", "leg", "torso")}


def pose_sequence(performance: Performance, scales: dict[str, float]) -> np.ndarray:
    """Forward kinematics: ``(T, 25, 3)`` joint positions of one performer.

    The loop runs over the 24 bones of the tree (parents before children), each step vectorised
    over all frames.
    """
    frames = len(performance.root)
    eye = np.broadcast_to(np.eye(3), (frames, 3, 3))
    world = {0: rotation("y", performance.yaw)}
    pos = np.zeros((frames, NUM_JOINTS, 3))
    pos[:, 0] = performance.root + np.array([0.0, 0.95 * scales["leg"], 0.0])
    for joint, parent, offset in TREE:
        offset = np.asarray(offset) * scales[BONE_GROUP[joint]]
        pos[:, joint] = pos[:, parent] + world[parent] @ offset
        world[joint] = world[parent] @ performance.local.get(joint, eye)
    return pos


def synth_sample(motion: str, subjects: tuple[int, ...], camera: int, frames: int,
                 performance_rng: np.random.Generator, sensor_rng: np.random.Generator,
                 seed: int, noise: float = 0.01) -> np.ndarray:
    """``(K, T, 25, 3)`` camera-space tracks of one sample, before file-level corruptions.

    ``performance_rng`` drives the movement (the same for every camera that records it);
    ``sensor_rng`` the placement and noise seen by one camera.
    """
    people = 2 if motion in TWO_PERSON else 1
    tracks = []
    rng = sensor_rng
    for role in range(people):
        body = pose_sequence(perform(motion, frames, performance_rng, role),
                             bone_scales(subjects[role], seed))
        if people == 2:  # face each other, 1.4 m apart along x
            facing = rotation("y", np.full(frames, np.pi / 2 if role == 0 else -np.pi / 2))
            body = np.einsum("tij,tvj->tvi", facing, body)
            body[..., 0] += -0.7 if role == 0 else 0.7
        tracks.append(body)
    scene = np.stack(tracks)  # (K, T, V, 3)
    # the scene faces the sensor (z towards it), seen from the camera's angle, about 3 m away;
    # a random shear per recording (calibration, posture) is the kind of variation shear
    # augmentation teaches invariance to
    distortion = np.eye(3) + rng.uniform(-0.5, 0.5, (3, 3)) * (1 - np.eye(3))
    view = rotation("y", np.array(np.pi + CAMERA_YAW[camera] + rng.normal(0, 0.05))) @ distortion
    scene = scene @ view.T
    scene += np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.6, -0.3), rng.uniform(2.7, 3.4)])
    scene += rng.normal(0, noise, scene.shape)
    return scene.astype(np.float32)


def corrupt(tracks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Runs of invalid (untracked) frames and occasional spurious extra tracks."""
    k, frames = tracks.shape[:2]
    tracks = tracks.copy()
    if rng.random() < 0.4:
        start = int(rng.integers(0, frames))
        tracks[:, start:start + int(rng.integers(1, 8))] = 0
    extra = []
    if rng.random() < 0.15:  # furniture: much wider than tall, barely moving
        furniture = np.zeros((frames, NUM_JOINTS, 3), dtype=np.float32)
        furniture[..., 0] = np.linspace(-0.8, 0.8, NUM_JOINTS) + rng.uniform(-1.5, 1.5)
        furniture[..., 1] = rng.uniform(-0.5, -0.3) + rng.normal(0, 0.02, (frames, NUM_JOINTS))
        furniture[..., 2] = rng.uniform(2.5, 3.5)
        extra.append(furniture)
    if rng.random() < 0.15:  # a flicker: another person glimpsed for a few frames
        flicker = np.zeros((frames, NUM_JOINTS, 3), dtype=np.float32)
        start = int(rng.integers(0, max(frames - 6, 1)))
        flicker[start:start + 6] = tracks[0, start:start + 6] + np.array([1.2, 0, 0.5])
        extra.append(flicker)
    if extra:
        tracks = np.concatenate([tracks, np.stack(extra)])
    return tracks


# ---------------------------------------------------------------------------------------------
# writers of the raw formats

_JOINT_LINE = "%.7f %.7f %.7f %.5f %.5f %.4f %.4f %.7f %.7f %.7f %.7f %d\n"
_JOINT_BLOCK = _JOINT_LINE * NUM_JOINTS


def skeleton_text(tracks: np.ndarray, rng: np.random.Generator) -> str:
    """The NTU ``.skeleton`` text of ``(K, T, 25, 3)`` tracks (absent where all zero)."""
    k, frames = tracks.shape[:2]
    ids = [72057594037927936 + int(rng.integers(0, 10 ** 6)) for _ in range(k)]
    present = tracks.any(axis=(2, 3))  # (K, T)
    depth = np.maximum(tracks[..., 2:3], 0.5)
    extras = np.concatenate([
        tracks[..., :2] / depth * [285.6, -285.6] + [256, 212],   # depthX, depthY
        tracks[..., :2] / depth * [1081.7, -1081.7] + [960, 540],  # colorX, colorY
        np.zeros((*tracks.shape[:3], 4)),                        # joint orientation
        np.full((*tracks.shape[:3], 1), 2.0),                    # tracking state
    ], axis=-1)
    values = np.concatenate([tracks, extras], axis=-1)  # (K, T, V, 12)
    out = [f"{frames}\n"]
    for t in range(frames):
        bodies = np.flatnonzero(present[:, t])
        out.append(f"{len(bodies)}\n")
        for b in bodies:
            out.append(f"{ids[b]} 0 1 1 1 1 0 0.01 -0.02 2\n25\n")
            out.append(_JOINT_BLOCK % tuple(values[b, t].ravel()))
    return "".join(out)


def write_ntu(release: str, out_dir: Path, subjects: int = 8, replications: int = 2,
              seed: int = 0, missing: int = 3, frames: tuple[int, int] = (40, 150)) -> list[Path]:
    """NTU ``.skeleton`` files: every subject x camera x replication x action, plus a few files
    named from the official missing list (which a reader must exclude)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    actions = ACTIONS[release]
    last_setup = 17 if release == "ntu60" else 32
    written = []
    for subject in range(1, subjects + 1):
        setup = 1 + (subject - 1) % last_setup if release == "ntu60" else \
            1 + (subject * 7) % last_setup
        for camera in (1, 2, 3):
            for replication in range(1, replications + 1):
                for motion, action in zip(MOTIONS, actions):
                    name = f"S{setup:03d}C{camera:03d}P{subject:03d}R{replication:03d}A{action:03d}"
                    performance = np.random.default_rng([seed, subject, replication, action])
                    rng = np.random.default_rng([seed, subject, camera, replication, action])
                    partner = subjects + 1 + (subject + replication) % 3
                    length = int(performance.integers(*frames))
                    tracks = corrupt(synth_sample(motion, (subject, partner), camera, length,
                                                  performance, rng, seed), rng)
                    path = out_dir / f"{name}.skeleton"
                    path.write_text(skeleton_text(tracks, rng))
                    written.append(path)
    for k, name in enumerate(sorted(missing_skeletons(release))[:missing]):
        rng = np.random.default_rng([seed, 99, k])
        path = out_dir / f"{name}.skeleton"
        path.write_text(skeleton_text(synth_sample("walk", (1, 2), 1, 60, rng, rng, seed), rng))
        written.append(path)
    return written


def write_pku(part: int, out_dir: Path, subjects: int = 8, videos_per_subject: int = 1,
              seed: int = 0, clips_per_video: int = 13) -> list[Path]:
    """PKU-MMD skeleton, label and split files. Each untrimmed video chains clips of different
    actions with idle gaps; views L, M, R are the three camera angles."""
    out_dir = Path(out_dir)
    dirs = {d: out_dir / d for d in ("skeleton", "label", "split")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    videos: dict[str, tuple[int, str]] = {}
    for subject in range(1, subjects + 1):
        for v in range(videos_per_subject):
            for view, camera in (("L", 3), ("M", 1), ("R", 2)):
                stem = (f"{(subject - 1) * videos_per_subject + v + 2:04d}-{view}" if part == 1
                        else f"A{v + 1:02d}N{subject:02d}-{view}")
                videos[stem] = (subject, view)
                rng = np.random.default_rng([seed, part, subject, v, camera])
                order = rng.permutation(len(MOTIONS))[:clips_per_video]
                rows, labels, frame = [], [], 0
                for idx in order:
                    gap = int(rng.integers(5, 20))
                    rows.append(np.zeros((gap, 2, NUM_JOINTS, 3), dtype=np.float32))
                    length = int(rng.integers(40, 120))
                    # the same performers in every view of a video
                    clip_rng = np.random.default_rng([seed, part, subject, v, int(idx)])
                    tracks = synth_sample(MOTIONS[idx], (subject, subjects + 1), camera, length,
                                          clip_rng, rng, seed)
                    both = np.zeros((length, 2, NUM_JOINTS, 3), dtype=np.float32)
                    both[:, :len(tracks)] = tracks.transpose(1, 0, 2, 3)
                    rows.append(both)
                    labels.append(f"{ACTIONS['pku'][idx]},{frame + gap + 1},"
                                  f"{frame + gap + length},{rng.integers(1, 3)}\n")
                    frame += gap + length
                data = np.concatenate(rows).reshape(frame, -1)
                np.savetxt(dirs["skeleton"] / f"{stem}.txt", data, fmt="%.6f")
                (dirs["label"] / f"{stem}.txt").write_text("".join(labels))
    val_subjects = {2, 3, 7}
    write_split(dirs["split"] / "cross-subject.txt",
                [s for s, (subj, _) in videos.items() if subj not in val_subjects],
                [s for s, (subj, _) in videos.items() if subj in val_subjects])
    write_split(dirs["split"] / "cross-view.txt",
                [s for s, (_, view) in videos.items() if view != "L"],
                [s for s, (_, view) in videos.items() if view == "L"])
    return sorted(dirs["skeleton"].glob("*.txt"))


def write_split(path: Path, train: list[str], val: list[str]) -> None:
    """The official split-file format, including its ``Validataion`` spelling."""
    path.write_text(f"Training videos: \n{', '.join(train)}\n"
                    f"Validataion videos: \n{', '.join(val)}\n")
