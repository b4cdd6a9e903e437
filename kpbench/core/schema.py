"""Keypoint schemas: a keypoint set described as data (names, skeleton, flip pairs, OKS sigmas, category, and
named groups of keypoints such as head, arms, torso and legs).

A `KeypointSchema` is frozen and hashable. `COCO17` (COCO's 17 person keypoints) is built in; `get_schema(name)`
looks a built-in up, and `KeypointSchema.from_category(category, sigmas)` reads one from a GT file's `categories`
entry. Every stage takes its schema explicitly; outside this module nothing assumes 17 keypoints, category 1 or
COCO's names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kpbench.core.errors import KpbenchError

KEYPOINT_STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
BBOX_STAT_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip

# COCO keypoint evaluation keeps the top 20 detections per image (hard-coded in pycocotools' summarize()).
KEYPOINT_MAX_DETS = 20
# The name of the whole keypoint set where groups are listed (no group may take it).
ALL_KEYPOINTS = "all"
BBOX_MAX_DETS: tuple[int, ...] = (1, 10, 100)


def sigmas_as_pycocotools(literals: Sequence[float]) -> np.ndarray:
    """Per-keypoint OKS sigmas computed as pycocotools computes COCO's: the literals (ten times the sigma) divided
    by 10.0. That is not always the same double as the decimal literal (1.07/10.0 != 0.107), so schemas whose
    published sigmas are written this way stay bit-exact. Read-only float64."""
    sigmas = np.asarray(literals, dtype=np.float64) / 10.0
    sigmas.setflags(write=False)
    return sigmas


def _flip_pairs(names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """0-based (left, right) index pairs of names that differ only by a left/right prefix or suffix."""
    index = {name: i for i, name in enumerate(names)}
    pairs = []
    for name, i in index.items():
        for left, right in (("left_", "right_"), ("l_", "r_"), ("_left", "_right"), ("left", "right")):
            if left in name:
                other = name.replace(left, right, 1)
                if other in index and other != name:
                    pairs.append((i, index[other]))
                    break
    return tuple(sorted(set(pairs)))


@dataclass(frozen=True, eq=True)
class KeypointSchema:
    """One keypoint set. `skeleton` holds 1-based index pairs as COCO files do; `limbs` gives them 0-based.
    `sigmas` are the per-keypoint OKS constants (Ronchi & Perona, ICCV 2017; OKS uses k = 2 sigma)."""

    name: str
    keypoint_names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]
    flip_pairs: tuple[tuple[int, int], ...] = ()
    category_id: int = 1
    category_name: str = "person"
    sigmas_source: str = ""
    # How the keypoint set is scored: "coco" (COCOeval's keypoints), or "crowdpose" (CrowdPose's protocol:
    # AP easy/medium/hard by each image's crowdIndex, the OKS scale from the box when the GT has no area).
    protocol: str = "coco"
    # Named groups of keypoints, (name, 0-based indices), for AP per group (kpbench.analysis.keypoint_ap). They
    # change no score of the whole set, so two schemas that differ only in their groups compare equal.
    groups: tuple[tuple[str, tuple[int, ...]], ...] = field(default=(), compare=False)
    _sigma_array: np.ndarray = field(default=None, init=False, repr=False, compare=False, hash=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        k = len(self.keypoint_names)
        if k == 0:
            raise KpbenchError(f"keypoint schema {self.name!r}: no keypoints")
        if len(self.sigmas) != k:
            raise KpbenchError(f"keypoint schema {self.name!r}: {len(self.sigmas)} sigmas for {k} keypoints")
        for a, b in self.skeleton:
            if not (1 <= a <= k and 1 <= b <= k):
                raise KpbenchError(f"keypoint schema {self.name!r}: skeleton link {[a, b]} is outside 1..{k}")
        for a, b in self.flip_pairs:
            if not (0 <= a < k and 0 <= b < k):
                raise KpbenchError(f"keypoint schema {self.name!r}: flip pair {(a, b)} is outside 0..{k - 1}")
        object.__setattr__(self, "groups", _checked_groups(self.name, self.groups, k))
        sigmas = np.asarray(self.sigmas, dtype=np.float64)
        if not (np.isfinite(sigmas).all() and (sigmas > 0).all()):
            raise KpbenchError(f"keypoint schema {self.name!r}: sigmas must be positive finite numbers")
        sigmas.setflags(write=False)
        object.__setattr__(self, "_sigma_array", sigmas)

    @property
    def num_keypoints(self) -> int:
        """K, the number of keypoints."""
        return len(self.keypoint_names)

    @property
    def sigma_array(self) -> np.ndarray:
        """The sigmas as a read-only float64 array of shape (K,)."""
        return self._sigma_array

    @property
    def limbs(self) -> tuple[tuple[int, int], ...]:
        """The skeleton as 0-based index pairs, for drawing."""
        return tuple((a - 1, b - 1) for a, b in self.skeleton)

    @property
    def stat_names(self) -> tuple[str, ...]:
        """The keypoint summary stats its protocol reports (COCOeval's ten, or CrowdPose's nine)."""
        if self.protocol == "crowdpose":
            return ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_easy", "AP_medium", "AP_hard")
        return KEYPOINT_STAT_NAMES

    @property
    def result_length(self) -> int:
        """The length of a result's flat `keypoints` list: 3K (x, y, v per keypoint)."""
        return 3 * self.num_keypoints

    def group_names(self) -> dict[str, tuple[str, ...]]:
        """{group: its keypoint names}, in the schema's group order."""
        return {name: tuple(self.keypoint_names[i] for i in indices) for name, indices in self.groups}

    def with_groups(self, groups: Sequence[tuple[str, Sequence[int | str]]]) -> KeypointSchema:
        """The same keypoint set with other groups: (name, keypoints) pairs, keypoints as names or 0-based
        indices (see `resolve_groups`)."""
        return _replace(self, groups=resolve_groups(groups, self))

    def category(self) -> dict[str, Any]:
        """The schema as a COCO `categories` entry."""
        return {
            "id": self.category_id, "name": self.category_name, "supercategory": self.category_name,
            "keypoints": list(self.keypoint_names), "skeleton": [list(link) for link in self.skeleton],
        }  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description (what a manifest records)."""
        return {
            "name": self.name, "num_keypoints": self.num_keypoints, "keypoint_names": list(self.keypoint_names),
            "skeleton": [list(s) for s in self.skeleton], "flip_pairs": [list(p) for p in self.flip_pairs],
            "sigmas": [float(s) for s in self.sigma_array], "sigmas_source": self.sigmas_source,
            "category_id": self.category_id, "category_name": self.category_name, "protocol": self.protocol,
            "groups": {name: list(names) for name, names in self.group_names().items()},
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeypointSchema:
        """The inverse of `to_json`; a built-in schema's name gives the built-in object itself when it matches."""
        schema = cls(
            name=str(data["name"]),
            keypoint_names=tuple(data["keypoint_names"]),
            skeleton=tuple((int(a), int(b)) for a, b in data.get("skeleton", ())),
            sigmas=tuple(float(s) for s in data["sigmas"]),
            flip_pairs=tuple((int(a), int(b)) for a, b in data.get("flip_pairs", ())),
            category_id=int(data.get("category_id", 1)),
            category_name=str(data.get("category_name", "person")),
            sigmas_source=str(data.get("sigmas_source", "")),
            protocol=str(data.get("protocol", "coco")),
        )
        if isinstance(data.get("groups"), Mapping):
            schema = schema.with_groups(list(data["groups"].items()))
        builtin = BUILTIN_SCHEMAS.get(schema.name)
        return builtin if builtin is not None and _same_content(builtin, schema) else schema

    @classmethod
    def from_category(
        cls, category: Mapping[str, Any], sigmas: Sequence[float], name: str | None = None, sigmas_source: str = ""
    ) -> KeypointSchema:
        """A schema from a COCO `categories` entry (its `keypoints` and `skeleton`) plus per-keypoint sigmas.
        Flip pairs are found from left/right names."""
        names = category.get("keypoints")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise KpbenchError(f"category {category.get('id')!r}: `keypoints` must be a list of names")
        skeleton = category.get("skeleton") or []
        return cls(
            name=name or str(category.get("name", "custom")),
            keypoint_names=tuple(names),
            skeleton=tuple((int(a), int(b)) for a, b in skeleton),
            sigmas=tuple(float(s) for s in sigmas),
            flip_pairs=_flip_pairs(names),
            category_id=int(category.get("id", 1)),
            category_name=str(category.get("name", "person")),
            sigmas_source=sigmas_source,
        )

    def with_category_id(self, category_id: int) -> KeypointSchema:
        """The same keypoint set under another category id."""
        return self if category_id == self.category_id else _replace(self, category_id=category_id)

    def matches_category(self, category: Mapping[str, Any]) -> bool:
        """Whether a GT `categories` entry lists exactly this schema's keypoint names, in order."""
        return tuple(category.get("keypoints") or ()) == self.keypoint_names


def _replace(schema: KeypointSchema, **changes: Any) -> KeypointSchema:
    import dataclasses

    return dataclasses.replace(schema, **changes)


def _checked_groups(
    schema_name: str, groups: Sequence[Any], num_keypoints: int
) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Groups as (name, indices) tuples, checked: named, non-empty, indices in 0..K-1 without repeats."""
    out: list[tuple[str, tuple[int, ...]]] = []
    for group in groups:
        if not (isinstance(group, (tuple, list)) and len(group) == 2 and isinstance(group[0], str)):
            raise KpbenchError(f"keypoint schema {schema_name!r}: a group is (name, keypoint indices), got {group!r}")
        name, indices = group[0].strip(), group[1]
        if not name or name == ALL_KEYPOINTS:
            raise KpbenchError(f"keypoint schema {schema_name!r}: a group needs a name other than {ALL_KEYPOINTS!r} "
                               f"(the whole keypoint set), got {group[0]!r}")
        if any(name == seen for seen, _ in out):
            raise KpbenchError(f"keypoint schema {schema_name!r}: two groups are named {name!r}")
        if not indices or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in indices):
            raise KpbenchError(f"keypoint schema {schema_name!r}: group {name!r} needs keypoint indices, got {indices!r}")
        if not all(0 <= i < num_keypoints for i in indices):
            raise KpbenchError(f"keypoint schema {schema_name!r}: group {name!r} has a keypoint outside 0..{num_keypoints - 1}")
        if len(set(indices)) != len(indices):
            raise KpbenchError(f"keypoint schema {schema_name!r}: group {name!r} lists a keypoint twice")
        out.append((name, tuple(int(i) for i in indices)))
    return tuple(out)


class ParsedGroups(tuple[tuple[str, tuple[int | str, ...]], ...]):
    """`parse_groups`' result: the (name, keypoints) pairs, and where the user gave them (`source`: "--groups" or
    the JSON file), which `resolve_groups`' errors name instead of the library's "keypoint groups". It is a tuple
    (equal to the plain pairs); `source` survives copies and pickling."""

    source: str

    def __new__(
        cls, groups: Sequence[tuple[str, tuple[int | str, ...]]] = (), source: str = "keypoint groups"
    ) -> ParsedGroups:
        made = super().__new__(cls, groups)
        made.source = source
        return made


def resolve_groups(
    groups: Sequence[tuple[str, Sequence[int | str]]], schema: KeypointSchema
) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(name, keypoints) pairs with keypoints given by name (as the schema names them) or by 0-based index,
    as (name, indices); an unknown name is an error that lists the schema's names. Errors begin with where the
    groups came from (`ParsedGroups.source`: --groups or its JSON file), else "keypoint groups"."""
    source = getattr(groups, "source", "keypoint groups")
    try:
        return _resolved_groups(groups, schema)
    except KpbenchError as exc:
        if source == "keypoint groups":
            raise
        message = str(exc).removeprefix("keypoint groups: ").removeprefix(f"keypoint schema {schema.name!r}: ")
        raise KpbenchError(f"{source}: {message}") from None


def _resolved_groups(
    groups: Sequence[tuple[str, Sequence[int | str]]], schema: KeypointSchema
) -> tuple[tuple[str, tuple[int, ...]], ...]:
    index = {name: i for i, name in enumerate(schema.keypoint_names)}
    out = []
    for group in groups:
        if not (isinstance(group, (tuple, list)) and len(group) == 2 and isinstance(group[0], str)):
            raise KpbenchError(f"keypoint groups: each group is (name, keypoints), got {group!r}")
        name, members = group
        if isinstance(members, str) or not isinstance(members, Sequence):
            raise KpbenchError(f"keypoint groups: group {name!r} needs a list of keypoints, got {members!r}")
        indices = []
        for member in members:
            if isinstance(member, str) and member.strip() in index:
                indices.append(index[member.strip()])
            elif isinstance(member, str) and member.strip().isdigit():
                indices.append(int(member.strip()))
            elif isinstance(member, (int, np.integer)) and not isinstance(member, bool):
                indices.append(int(member))
            else:
                raise KpbenchError(f"keypoint groups: group {name!r}: {member!r} is not a keypoint of the "
                                   f"{schema.name} schema ({', '.join(schema.keypoint_names)}; or 0-based indices)")
        out.append((name, tuple(indices)))
    return _checked_groups(schema.name, out, schema.num_keypoints)


def parse_groups(text: str) -> ParsedGroups:
    """--groups: "head:nose,left_eye,right_eye;legs:13,14,15,16" (groups split by ";", name and keypoints by
    ":", keypoints by ","; names as the schema's or 0-based indices), or a JSON file holding {name: [keypoints]}.
    Syntax only: `resolve_groups` checks the keypoints against a schema."""
    from pathlib import Path

    path = Path(text)
    if path.suffix == ".json" or path.is_file():
        from kpbench.core.io import read_json

        data = read_json(path)
        if not isinstance(data, dict) or not data or not all(
            isinstance(v, list) and all(isinstance(m, (str, int)) and not isinstance(m, bool) for m in v)
            for v in data.values()
        ):
            raise KpbenchError(f"{path}: expected a JSON object of groups, {{\"head\": [\"nose\", \"left_eye\"], ...}}")
        return ParsedGroups([(str(name), tuple(members)) for name, members in data.items()], str(path))
    groups: list[tuple[str, tuple[int | str, ...]]] = []
    for item in text.split(";"):
        if not item.strip():
            continue
        name, sep, members = item.partition(":")
        keypoints = tuple(m.strip() for m in members.split(",") if m.strip())
        if not sep or not name.strip() or not keypoints:
            raise KpbenchError(f"--groups: {item.strip()!r} is not NAME:KEYPOINT,KEYPOINT,... "
                               "(e.g. head:nose,left_eye,right_eye;legs:13,14,15,16, or a JSON file)")
        groups.append((name.strip(), tuple(int(k) if k.isdigit() else k for k in keypoints)))
    if not groups:
        raise KpbenchError(f"--groups: no group in {text!r} (e.g. head:nose,left_eye,right_eye;legs:13,14,15,16)")
    return ParsedGroups(groups, "--groups")


def _named_groups(names: Sequence[str], groups: Mapping[str, Sequence[str]]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    index = {name: i for i, name in enumerate(names)}
    return tuple((group, tuple(index[m] for m in members)) for group, members in groups.items())


def _same_content(a: KeypointSchema, b: KeypointSchema) -> bool:
    return (a.keypoint_names, a.skeleton, a.category_id) == (b.keypoint_names, b.skeleton, b.category_id) and bool(
        np.array_equal(a.sigma_array, b.sigma_array)
    )


# COCO's 17 person keypoints, exactly as in person_keypoints_*.json.
_COCO_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)  # fmt: skip
_COCO_SKELETON = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
    (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)  # fmt: skip
# Ronchi & Perona (ICCV 2017) as used by COCO; written as pycocotools writes them (literals / 10.0).
_COCO_SIGMA_LITERALS = (
    0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89,
)  # fmt: skip

COCO17 = KeypointSchema(
    name="coco17",
    keypoint_names=_COCO_NAMES,
    skeleton=_COCO_SKELETON,
    sigmas=tuple(float(s) for s in sigmas_as_pycocotools(_COCO_SIGMA_LITERALS)),
    flip_pairs=_flip_pairs(_COCO_NAMES),
    category_id=1,
    category_name="person",
    sigmas_source="pycocotools COCOeval.computeOks (Ronchi & Perona, ICCV 2017)",
    # A partition of the 17: the face, the limbs' far joints, the four joints of the trunk, the legs below the hip.
    groups=_named_groups(_COCO_NAMES, {
        "head": ("nose", "left_eye", "right_eye", "left_ear", "right_ear"),
        "arms": ("left_elbow", "right_elbow", "left_wrist", "right_wrist"),
        "torso": ("left_shoulder", "right_shoulder", "left_hip", "right_hip"),
        "legs": ("left_knee", "right_knee", "left_ankle", "right_ankle"),
    }),
)

# CrowdPose (Li et al., CVPR 2019): COCO's 12 body joints, then head and neck; the sigmas as CrowdPose's and
# xtcocotools' evaluation write them (COCO's body literals, head and neck as shoulders, divided by 10).
_CROWDPOSE_NAMES = (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck",
)  # fmt: skip
CROWDPOSE14 = KeypointSchema(
    name="crowdpose14",
    keypoint_names=_CROWDPOSE_NAMES,
    skeleton=((13, 14), (14, 1), (14, 2), (1, 3), (3, 5), (2, 4), (4, 6), (1, 7), (2, 8), (7, 8), (7, 9), (9, 11),
              (8, 10), (10, 12)),
    sigmas=tuple(float(s) for s in sigmas_as_pycocotools(
        (0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89, 0.79, 0.79))),
    flip_pairs=_flip_pairs(_CROWDPOSE_NAMES),
    sigmas_source="CrowdPose / xtcocotools keypoints_crowd ([.79, .79, .72, ..., .79, .79] / 10)",
    protocol="crowdpose",
    groups=_named_groups(_CROWDPOSE_NAMES, {
        "head": ("head", "neck"),
        "arms": ("left_elbow", "right_elbow", "left_wrist", "right_wrist"),
        "torso": ("left_shoulder", "right_shoulder", "left_hip", "right_hip"),
        "legs": ("left_knee", "right_knee", "left_ankle", "right_ankle"),
    }),
)

# AP-10K (Yu et al., NeurIPS 2021 Datasets and Benchmarks): 17 animal keypoints, its 54 species as categories;
# the sigmas of mmpose's configs/_base_/datasets/ap10k.py, which its published numbers use.
_AP10K_NAMES = (
    "left_eye", "right_eye", "nose", "neck", "root_of_tail", "left_shoulder", "left_elbow", "left_front_paw",
    "right_shoulder", "right_elbow", "right_front_paw", "left_hip", "left_knee", "left_back_paw", "right_hip",
    "right_knee", "right_back_paw",
)  # fmt: skip
AP10K17 = KeypointSchema(
    name="ap10k17",
    keypoint_names=_AP10K_NAMES,
    skeleton=((1, 2), (1, 3), (2, 3), (3, 4), (4, 5), (4, 6), (6, 7), (7, 8), (4, 9), (9, 10), (10, 11), (5, 12),
              (12, 13), (13, 14), (5, 15), (15, 16), (16, 17)),
    sigmas=(0.025, 0.025, 0.026, 0.035, 0.035, 0.079, 0.072, 0.062, 0.079, 0.072, 0.062, 0.107, 0.087, 0.089,
            0.107, 0.087, 0.089),
    flip_pairs=_flip_pairs(_AP10K_NAMES),
    category_name="animal",
    sigmas_source="mmpose configs/_base_/datasets/ap10k.py",
    groups=_named_groups(_AP10K_NAMES, {
        "head": ("left_eye", "right_eye", "nose"),
        "front legs": ("left_elbow", "left_front_paw", "right_elbow", "right_front_paw"),
        "torso": ("neck", "root_of_tail", "left_shoulder", "right_shoulder", "left_hip", "right_hip"),
        "back legs": ("left_knee", "left_back_paw", "right_knee", "right_back_paw"),
    }),
)

BUILTIN_SCHEMAS: dict[str, KeypointSchema] = {s.name: s for s in (COCO17, CROWDPOSE14, AP10K17)}


def get_schema(name: str) -> KeypointSchema:
    """A built-in schema by name (`coco17`, ...)."""
    schema = BUILTIN_SCHEMAS.get(name.lower())
    if schema is None:
        raise KpbenchError(f"unknown keypoint schema {name!r}; built in: {', '.join(sorted(BUILTIN_SCHEMAS))}")
    return schema


# COCO17's parts under their historical names, for code that only ever meant COCO persons.
KEYPOINT_NAMES: tuple[str, ...] = COCO17.keypoint_names
NUM_KEYPOINTS = COCO17.num_keypoints
COCO_SKELETON: tuple[tuple[int, int], ...] = COCO17.skeleton
LIMBS: tuple[tuple[int, int], ...] = COCO17.limbs
SIGMAS: np.ndarray = COCO17.sigma_array
PERSON_CATEGORY_ID = COCO17.category_id


def parse_sigmas(text: str) -> tuple[float, ...]:
    """--sigmas: a comma-separated list (0.026,0.025,...), or a JSON file holding a list or {"sigmas": [...]}."""
    import json
    from pathlib import Path

    path = Path(text)
    if path.suffix == ".json" or path.is_file():
        from kpbench.core.io import read_json

        data = read_json(path)
        values = data.get("sigmas") if isinstance(data, dict) else data
        where = str(path)
    else:
        try:
            values = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise KpbenchError(f"--sigmas: not a comma-separated list of numbers or a JSON file: {text!r}") from None
        where = "--sigmas"
    if not isinstance(values, list) or not values or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
        raise KpbenchError(f"{where}: expected a non-empty list of numbers (per-keypoint sigmas), e.g. {json.dumps([0.026, 0.025])}")
    if not all(v > 0 and v == v and v != float("inf") for v in values):
        raise KpbenchError(f"{where}: sigmas must be positive finite numbers")
    return tuple(float(v) for v in values)


def stat_names(iou_type: str) -> tuple[str, ...]:
    """The summary stat names for an iou type ("keypoints" or "bbox")."""
    return KEYPOINT_STAT_NAMES if iou_type == "keypoints" else BBOX_STAT_NAMES


def is_id_value(value: object) -> bool:
    """A COCO id reference as pycocotools finds it: an integer, or a float that equals one (1.0 == 1 and
    hash(1.0) == hash(1)). Not a bool: True == 1 in Python, so a JSON true would silently refer to id 1."""
    return type(value) is int or (type(value) is float and value.is_integer())
