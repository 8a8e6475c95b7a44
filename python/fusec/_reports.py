"""The typed reports of fusec's Python API. Each has the fields of the
report the command line prints with ``--json`` (under ``"report"``), and
``to_dict()`` gives that object back; ``notes`` and ``warnings`` are what
the call said on the way (the CLI's ``"notes"`` and ``"warnings"``)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple


class _Report:
    """Shared by every report: ``to_dict()`` and building from JSON."""

    def to_dict(self) -> Dict[str, Any]:
        """The report as the CLI's ``--json`` prints it (without notes and warnings)."""
        return _plain(self)

    @classmethod
    def _from(cls, value: Dict[str, Any], notes: List[str] = (), warnings: List[str] = ()):  # type: ignore[assignment]
        obj = _build(cls, value)
        if "notes" in {f.name for f in dataclasses.fields(cls)}:
            object.__setattr__(obj, "notes", list(notes))
            object.__setattr__(obj, "warnings", list(warnings))
        return obj


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            if f.metadata.get("message"):
                continue
            value = getattr(obj, f.name)
            if f.metadata.get("flatten"):
                out.update(_plain(value))
            else:
                out[f.name] = _plain(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def _build(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return _build(inner[0], value)
    if origin in (list, List):
        return [_build(args[0], v) for v in value]
    if origin in (tuple, Tuple):
        return tuple(value)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.metadata.get("message"):
                continue
            if f.metadata.get("flatten"):
                kwargs[f.name] = _build(hints[f.name], value)
            elif f.name in value:
                kwargs[f.name] = _build(hints[f.name], value[f.name])
        return tp(**kwargs)
    return value


def _messages():
    return field(default_factory=list, repr=False, compare=False, metadata={"message": True})


def _flatten():
    return field(metadata={"flatten": True})


@dataclass(frozen=True)
class MemberFile:
    """One member of a fused model: its outputs are ``name/OUTPUT``."""

    name: str
    file: str
    sha256: str


@dataclass(frozen=True)
class Candidate:
    """One plan ``tune`` measured: its runs of node groups (1 = grouped)."""

    plan: str
    round: int
    stats: Stats = _flatten()
    speedup_p50: float = 1.0
    speedup_p50_interval: Optional[Tuple[float, float]] = None
    over_separate: Optional[float] = None
    """Round 3: the speedup over ``00000000`` (every member apart), the
    median of their per-round ratios (rounds 1 and 3 pooled where it ran in
    both): what the choice is made on."""
    over_separate_interval: Optional[Tuple[float, float]] = None


@dataclass(frozen=True)
class PlanRun:
    """One run of node groups of a tuned plan: what grouping stacks there,
    whether the chosen plan groups it, and the measured gain of grouping it."""

    run: int
    groups: Optional[Tuple[int, int]]
    """First and last node group; None when there are fewer groups than runs."""
    channels: int
    member_axis: int
    ops: str
    grouped: bool
    gain: Optional[float]
    by_costs: int = 0
    """How many of its node groups the choice from costs groups."""
    modelled_gain: Optional[float] = None
    """Their profiled per-member time over their grouped time."""


@dataclass(frozen=True)
class CostReport:
    """``tune``'s choice per node group from costs profiled on the runtime
    (candidate ``costs``): one digit per node group (1 = grouped), and the
    modelled times (µs) it rests on."""

    source: str
    assignment: str
    groupable: int
    grouped: int
    separate_us: float
    all_grouped_us: float
    chosen_us: float
    move_fixed_us: float
    move_us_per_mb: float
    move_fitted_on: int
    unattributed_us: Tuple[float, float]


@dataclass(frozen=True)
class TuneReport:
    """What ``tune=True`` measured and chose."""

    device: str
    warmup: int
    runs: int
    candidates: List[Candidate]
    chosen: str
    speedup_p50: Optional[float]
    """None when nothing was measured (grouping stacks no layer)."""
    speedup_p50_interval: Optional[Tuple[float, float]]
    grouped_runs: int
    plan_runs: List[PlanRun]
    cached: Optional[str] = None
    """The cache file the plan was taken from, when it was not measured now."""
    costs: Optional[CostReport] = None
    """The choice from profiled costs (ONNX Runtime only)."""


@dataclass(frozen=True)
class FuseReport(_Report):
    """What :func:`fusec.fuse` wrote."""

    output: str
    format: str
    """``onnx`` or ``mlpackage``."""
    precision: str
    members: List[MemberFile]
    nodes: int
    convs: int
    groups: int
    """Aligned node groups: ``shared`` (bit-identical, computed once),
    ``grouped`` (stacked into one op) and ``divergent`` (heads that differ)."""
    shared: int
    grouped: int
    member_axis: int
    """Of the grouped, those stacked on a member axis (transformer layers)."""
    divergent: int
    identical: List[Tuple[str, str]]
    """Members identical to an earlier one: (member, earlier member)."""
    size_bytes: int
    load_ms: float
    fuse_ms: float
    export_ms: float
    explain: Optional[str]
    """``fusec fuse --explain``'s text, when ``explain=True``."""
    lowering: Dict[str, Any]
    """The lowering used (the model's ``fusec.lowering`` metadata)."""
    tuning: Optional[TuneReport]
    """What ``tune=True`` measured and chose."""
    notes: List[str] = _messages()
    warnings: List[str] = _messages()


@dataclass(frozen=True)
class OutputDiff:
    """One output of one member on one input: fused against the member alone."""

    input: int
    member: str
    output: str
    max_abs: float
    rel_l2: float
    cosine: float
    outside: int
    """Elements outside ``atol + rtol * |member|``."""


@dataclass(frozen=True)
class Ranking:
    """A one-logit cross-encoder: on how many inputs the fused model orders
    the batch's pairs as the member does."""

    member: str
    batch: int
    kept: int
    ranked: int


@dataclass(frozen=True)
class DetectionDiff:
    """Decoded detections (effdet decoding and NMS), fused against the member."""

    count: int
    boxes_mse: float
    scores_mse: float
    label_accuracy: float
    mean_iou: float


@dataclass(frozen=True)
class DetectionRow:
    input: int
    member: str
    fused_detections: int
    member_detections: int
    diff: DetectionDiff = _flatten()


@dataclass(frozen=True)
class Stats:
    """Latencies of one configuration, in milliseconds."""

    runs: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rps: float


@dataclass(frozen=True)
class SpeedRow:
    config: str
    stats: Stats = _flatten()
    pairs_per_s: Optional[float] = None
    speedup_p50: float = 1.0
    speedup_p50_interval: Optional[Tuple[float, float]] = None
    """95% bootstrap interval of ``speedup_p50`` (None for the baseline)."""


@dataclass(frozen=True)
class SpeedReport:
    warmup: int
    runs: int
    sessions: int
    """Sessions of each model the runs were split among, each made afresh."""
    rows: List[SpeedRow]


@dataclass(frozen=True)
class VerifyReport(_Report):
    """What :func:`fusec.verify` found."""

    model: str
    members: List[str]
    device: str
    inputs: int
    generated_inputs: bool
    atol: float
    rtol: float
    weights: str
    outputs: List[OutputDiff]
    rankings: List[Ranking]
    detections: List[DetectionRow]
    equivalent: bool
    failed: List[str]
    speed: Optional[SpeedReport]
    notes: List[str] = _messages()
    warnings: List[str] = _messages()

    @property
    def speedup(self) -> Optional[float]:
        """The fused model's p50 speedup over the members one after another."""
        return self.speed.rows[-1].speedup_p50 if self.speed else None


@dataclass(frozen=True)
class BenchRow:
    config: str
    device: str
    stats: Stats = _flatten()
    speedup_p50: float = 1.0
    speedup_p50_interval: Optional[Tuple[float, float]] = None
    max_abs: float = 0.0
    rel_l2: float = 0.0
    detections: Optional[DetectionDiff] = None
    same_as: Optional[str] = None
    """The earlier config whose model this one is, byte for byte: timed
    once, its figures repeated here."""


@dataclass(frozen=True)
class Calibration:
    """The fastest fp32 lowering a bench measured (``calibrate=FILE``)."""

    config: str
    lowering: str
    group_from: float
    keep_bn: bool
    split_depthwise: bool
    split_pointwise: bool
    speedup_p50: float
    device: str
    members: List[str]
    plan: Optional[str] = None
    """For lowering ``plan`` (tuned): its runs of node groups, 1 = grouped."""
    split_linear: bool = False
    """Linear layers on the member axis kept per member."""
    member_axis: bool = False
    """Member-axis stacking where the lowering groups (False in files
    written before it existed)."""
    member_subgraphs: bool = False
    """Each member's blocks written as subgraphs of their own (False in
    files written before it existed)."""


@dataclass(frozen=True)
class BenchReport(_Report):
    """What :func:`fusec.bench` measured."""

    members: List[str]
    device: str
    warmup: int
    runs: int
    sessions: int
    """Sessions of each model the runs were split among, each made afresh."""
    rows: List[BenchRow]
    fastest: str
    fusion_gain: float
    calibration: Optional[Calibration]
    tuning: Optional[TuneReport]
    notes: List[str] = _messages()
    warnings: List[str] = _messages()

    def row(self, config: str) -> BenchRow:
        """The row of one configuration, by name."""
        for r in self.rows:
            if r.config == config:
                return r
        raise KeyError(config)


@dataclass(frozen=True)
class ValueInfo:
    name: str
    dtype: str
    shape: List[int]


@dataclass(frozen=True)
class OpCount:
    op: str
    count: int


@dataclass(frozen=True)
class InspectReport(_Report):
    """What :func:`fusec.inspect` shows."""

    file: str
    format: str
    architecture: Optional[str]
    inputs: List[ValueInfo]
    outputs: List[ValueInfo]
    nodes: int
    ops: List[OpCount]
    parameters: int
    tensors: List[ValueInfo]
    metadata: Dict[str, str]
    notes: List[str] = _messages()
    warnings: List[str] = _messages()
