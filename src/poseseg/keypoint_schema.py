"""Keypoint schemas: names, skeleton, left/right flip pairs and OKS sigmas.

A schema comes from a COCO category (``keypoints`` + ``skeleton``), never from constants
scattered in the code; COCO-17 is provided because it is the default dataset's schema.
"""
from __future__ import annotations

from dataclasses import dataclass, field

COCO_KEYPOINT_NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
]
# COCO's person skeleton, 0-based (the JSON stores it 1-based).
COCO_SKELETON = [
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
    (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
]
# Per-keypoint OKS sigmas of the COCO keypoint benchmark.
COCO_SIGMAS = [
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
    0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
]

# CrowdPose (Li et al., CVPR 2019): 14 keypoints and the sigmas of its evaluation (crowdposetools).
CROWDPOSE_KEYPOINT_NAMES = [
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck",
]
CROWDPOSE_SIGMAS = [0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089, 0.079, 0.079]
NAMED_SIGMAS = {"coco": COCO_SIGMAS, "crowdpose": CROWDPOSE_SIGMAS}


def named_sigmas(name: str) -> list[float]:
    """``data.oks_sigmas=coco`` / ``crowdpose``: a benchmark's published per-keypoint sigmas."""
    key = name.strip().lower()
    if key not in NAMED_SIGMAS:
        raise ValueError(f"data.oks_sigmas={name!r}: no such named set; choose {', '.join(NAMED_SIGMAS)} or give "
                         f"one number per keypoint")
    return list(NAMED_SIGMAS[key])


def skeleton_outside(category: dict) -> list[list[int]]:
    """The category's skeleton edges (1-based, as the file has them) that name a keypoint it does not have."""
    k = len(category.get("keypoints") or [])
    return [list(e) for e in category.get("skeleton") or [] if not all(1 <= int(i) <= k for i in e)]


def derive_flip_pairs(names: list[str]) -> list[tuple[int, int]]:
    """Pairs (i, j) whose names differ only by a left/right prefix or suffix."""
    index = {n.lower(): i for i, n in enumerate(names)}
    pairs = []
    for i, name in enumerate(names):
        low = name.lower()
        for left, right in (("left_", "right_"), ("l_", "r_"), ("_left", "_right"), ("_l", "_r")):
            swapped = None
            if left.endswith("_") and low.startswith(left):
                swapped = right + low[len(left):]
            elif left.startswith("_") and low.endswith(left):
                swapped = low[: -len(left)] + right
            if swapped is not None and swapped in index:
                pairs.append((i, index[swapped]))
                break
    return pairs


@dataclass
class KeypointSchema:
    """Everything the model, the data pipeline, the evaluator and the drawer need about keypoints."""

    names: list[str]
    skeleton: list[tuple[int, int]] = field(default_factory=list)  # 0-based index pairs
    flip_pairs: list[tuple[int, int]] | None = None  # derived from names when None
    sigmas: list[float] | None = None  # OKS sigmas; required for evaluation

    def __post_init__(self) -> None:
        self.skeleton = [tuple(map(int, e)) for e in self.skeleton]
        if self.flip_pairs is None:
            self.flip_pairs = derive_flip_pairs(self.names)
        self.flip_pairs = [tuple(map(int, p)) for p in self.flip_pairs]
        k = len(self.names)
        for a, b in self.skeleton:
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"skeleton edge ({a}, {b}) is outside the {k} keypoints {self.names}")
        if self.sigmas is not None and len(self.sigmas) != k:
            raise ValueError(f"{len(self.sigmas)} OKS sigmas given for {k} keypoints; give one per keypoint")

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    def flip_permutation(self) -> list[int]:
        """perm[i] = index whose value keypoint i takes after a horizontal flip."""
        perm = list(range(self.num_keypoints))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def is_left(self, i: int) -> bool:
        n = self.names[i].lower()
        return n.startswith(("left", "l_")) or n.endswith(("_left", "_l"))

    def is_right(self, i: int) -> bool:
        n = self.names[i].lower()
        return n.startswith(("right", "r_")) or n.endswith(("_right", "_r"))

    def to_dict(self) -> dict:
        return {"names": list(self.names), "skeleton": [list(e) for e in self.skeleton],
                "flip_pairs": [list(p) for p in self.flip_pairs],
                "sigmas": None if self.sigmas is None else list(self.sigmas)}

    @classmethod
    def from_dict(cls, d: dict) -> "KeypointSchema":
        return cls(names=list(d["names"]), skeleton=[tuple(e) for e in d.get("skeleton", [])],
                   flip_pairs=None if d.get("flip_pairs") is None else [tuple(p) for p in d["flip_pairs"]],
                   sigmas=d.get("sigmas"))

    @classmethod
    def from_coco_category(cls, category: dict, sigmas: list[float] | None = None) -> "KeypointSchema":
        """Schema of a COCO category dict (1-based skeleton); COCO-17 gets COCO's sigmas."""
        names = list(category.get("keypoints") or [])
        if not names:
            raise ValueError(f"category {category.get('name')!r} has no 'keypoints' list")
        bad = skeleton_outside(category)  # e.g. CrowdPose copies COCO's skeleton: a warning, never a refusal
        skeleton = [(a - 1, b - 1) for a, b in category.get("skeleton") or [] if [a, b] not in bad]
        if sigmas is None and [n.lower() for n in names] == COCO_KEYPOINT_NAMES:
            sigmas = list(COCO_SIGMAS)
        return cls(names=names, skeleton=skeleton, sigmas=sigmas)


def coco_person_schema() -> KeypointSchema:
    return KeypointSchema(names=list(COCO_KEYPOINT_NAMES), skeleton=list(COCO_SKELETON), sigmas=list(COCO_SIGMAS))


def coco_person_category() -> dict:
    """The COCO person category dict as stored in COCO JSON (1-based skeleton)."""
    return {"id": 1, "name": "person", "supercategory": "person",
            "keypoints": list(COCO_KEYPOINT_NAMES), "skeleton": [[a + 1, b + 1] for a, b in COCO_SKELETON]}
