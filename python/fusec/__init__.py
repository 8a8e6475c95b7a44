"""fusec: fuse N fine-tuned models of one architecture into one static model.

The same library code as the ``fusec`` command, called in-process (no
subprocess), with the GIL released while it fuses and runs. Every function
returns a typed report with the fields of the command's ``--json`` report
(``report.to_dict()`` gives them back as a dict); failures raise
:class:`InputError` (the input or the request must change),
:class:`MismatchError` (a checked output differs) or :class:`InternalError`,
each with ``file``, ``node`` and ``tensor`` where the error is about one.

Example (three detectors saved with ``torch.save(model.state_dict())`` and
``safetensors.torch.save_file``)::

    import fusec

    members = ["coco.safetensors", "aquarium.safetensors", "vehicles.safetensors"]
    fused = fusec.fuse(members, "super.onnx")
    print(fused.nodes, "nodes,", fused.convs, "Conv")        # 874 nodes, 324 Conv
    report = fusec.verify("super.onnx", members, runs=20)
    print(report.equivalent, f"{report.speedup:.2f}x")       # True 1.08x

ONNX Runtime comes from the ``onnxruntime`` package installed beside fusec
(``ORT_DYLIB_PATH``, when set, still wins).
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings as _warnings
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from . import _fusec
from ._reports import (
    BenchReport,
    BenchRow,
    Calibration,
    DetectionDiff,
    DetectionRow,
    FuseReport,
    InspectReport,
    MemberFile,
    OpCount,
    OutputDiff,
    Ranking,
    Candidate,
    CostReport,
    PlanRun,
    SpeedReport,
    SpeedRow,
    Stats,
    TuneReport,
    ValueInfo,
    VerifyReport,
)

__version__: str = _fusec.__version__

__all__ = [
    "fuse",
    "verify",
    "bench",
    "inspect",
    "run",
    "FusecError",
    "InputError",
    "MismatchError",
    "InternalError",
    "FuseReport",
    "VerifyReport",
    "BenchReport",
    "InspectReport",
    "MemberFile",
    "OutputDiff",
    "Ranking",
    "DetectionRow",
    "DetectionDiff",
    "SpeedReport",
    "SpeedRow",
    "Stats",
    "BenchRow",
    "Calibration",
    "ValueInfo",
    "OpCount",
    "TuneReport",
    "Candidate",
    "CostReport",
    "PlanRun",
]

PathLike = Union[str, "os.PathLike[str]"]
Arrays = Mapping[str, Any]


class FusecError(Exception):
    """A failed fusec call. ``kind`` is ``input``, ``internal`` or
    ``mismatch`` (the CLI's ``--json`` error kind); ``file``, ``node`` and
    ``tensor`` name what the error is about, where it is about one."""

    def __init__(self, kind: str, message: str, file: Optional[str] = None, node: Optional[str] = None,
                 tensor: Optional[str] = None, notes: Sequence[str] = (), warnings: Sequence[str] = ()):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.file = file
        self.node = node
        self.tensor = tensor
        self.notes = list(notes)
        self.warnings = list(warnings)

    @property
    def exit_code(self) -> int:
        """What the ``fusec`` command exits with for this error."""
        return {"input": 2, "interrupted": 130}.get(self.kind, 1)


class InputError(FusecError):
    """The input or the request must change (a bad checkpoint, a missing
    file, members that cannot fuse); the CLI exits 2 for these."""


class InternalError(FusecError):
    """fusec or a runtime failed; the CLI exits 1."""


class MismatchError(FusecError):
    """A checked output differs beyond the tolerances; ``report`` holds the
    whole :class:`VerifyReport` (which outputs, by how much)."""

    report: Optional[VerifyReport] = None


def _ort_package() -> None:
    """Tells the native library where this environment's ``onnxruntime``
    package is (without importing it)."""
    try:
        spec = importlib.util.find_spec("onnxruntime")
    except (ImportError, ValueError):
        return
    if spec is not None and spec.submodule_search_locations:
        _fusec.set_onnxruntime_package(list(spec.submodule_search_locations)[0])


_ort_package()


def _error(e: Exception) -> FusecError:
    """The typed exception for a native failure (its warnings issued)."""
    kind, message, file, node, tensor, report, notes, warns = e.args
    for w in warns:
        _warnings.warn(w, stacklevel=4)
    cls = {"input": InputError, "mismatch": MismatchError, "internal": InternalError}.get(kind, FusecError)
    err = cls(kind, message, file, node, tensor, notes, warns)
    if isinstance(err, MismatchError) and report is not None:
        err.report = VerifyReport._from(json.loads(report), notes, warns)
    return err


def _call(report_cls, fn, *args):
    try:
        text, notes, warns = fn(*args)
    except _fusec.Failure as e:
        raise _error(e) from None
    for w in warns:
        _warnings.warn(w, stacklevel=3)
    return report_cls._from(json.loads(text), notes, warns)


def _arch(arch: Optional[str], image_size: Optional[int], batch: Optional[int], seq_len: Optional[int]):
    return (arch, image_size, batch, seq_len)


def _paths(paths: Sequence[PathLike]) -> list:
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError("members must be a list of paths, not one path")
    return [os.fspath(p) for p in paths]


def _tensors(arrays: Arrays) -> list:
    """numpy arrays (or anything ``numpy.asarray`` takes) as float32 bytes;
    integer token ids and masks are carried exactly (below 2**24)."""
    import numpy as np

    out = []
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.kind in "iub" and a.size and np.abs(a.astype(np.int64)).max() > 2**24:
            raise ValueError(f"input `{name}`: integer values above 2**24 cannot be carried exactly")
        a = np.ascontiguousarray(a, dtype="<f4")
        out.append((str(name), list(a.shape), a.tobytes()))
    return out


def _inputs(inputs: Union[None, PathLike, Arrays]):
    """(input file, input tensors) from a path or a mapping of arrays."""
    if inputs is None:
        return None, None
    if isinstance(inputs, (str, os.PathLike)):
        return os.fspath(inputs), None
    return None, _tensors(inputs)


def fuse(
    members: Sequence[PathLike],
    output: PathLike,
    *,
    lowering: Optional[str] = None,
    group_from: Optional[float] = None,
    keep_bn: Optional[bool] = None,
    member_subgraphs: bool = False,
    channel_block: Optional[int] = None,
    calibration: Optional[PathLike] = None,
    precision: str = "fp32",
    explain: bool = False,
    tune: bool = False,
    tune_runs: int = 10,
    calibrate: Optional[PathLike] = None,
    retune: bool = False,
    runtime: str = "ort",
    device: str = "cpu",
    threads: Optional[int] = None,
    arch: Optional[str] = None,
    image_size: Optional[int] = None,
    batch: Optional[int] = None,
    seq_len: Optional[int] = None,
    progress: bool = True,
) -> FuseReport:
    """Fuses 2 or more members into one model, as ``fusec fuse``.

    ``members``: ``.safetensors`` state_dicts, HuggingFace checkpoint
    folders, or ``.onnx`` files of one architecture. ``output``: ``*.onnx``
    or ``*.mlpackage`` (Core ML), written atomically (an existing file is
    untouched on failure). ``lowering``: ``regions`` (default, grouped from
    ``group_from``, 0.25), ``grouped`` (also stacks a transformer's layers on
    a member axis) or ``separate``; ``calibration``: a ``bench(..., calibrate=FILE)`` file
    instead; ``tune=True`` measures plans (and, on ONNX Runtime, a choice per
    layer from its profiled costs) on ``runtime``/``device``/``threads``
    and fuses with the fastest (``calibrate=FILE`` keeps it for
    ``calibration=``); the plan is kept in a cache (``FUSEC_CACHE_DIR``, else
    ``~/.cache/fusec``) under the members' structure and the runtime, and
    reused for members of the same structure unless ``retune=True``.
    ``member_subgraphs=True`` writes each member's run of per-member layers
    as a subgraph of its own (a one-step ONNX ``Scan``), so that ONNX
    Runtime plans its memory as for the member alone (``tune=True``
    measures it as a candidate). ``channel_block``: conv channel counts are
    padded to a multiple of it before fusing (zero filters, the same
    outputs), so that ONNX Runtime's CPU provider keeps grouped convs in its
    blocked layout; default 16 (or the calibration file's), 0 pads nothing;
    Core ML output is never padded. ``precision``: ``fp32``, ``fp16`` (fp16 weights; Core ML
    computes in fp16) or ``fp16-compute`` (ONNX computing in fp16, for GPUs).

    >>> r = fusec.fuse(["coco.safetensors", "aquarium.safetensors", "vehicles.safetensors"], "super.onnx")
    >>> r.nodes, r.convs, [m.name for m in r.members]
    (874, 324, ['coco', 'aquarium', 'vehicles'])
    """
    chosen = [k for k, v in (("lowering", lowering), ("group_from", group_from), ("keep_bn", keep_bn)) if v is not None]
    if member_subgraphs and (calibration is not None or tune):
        raise ValueError("member_subgraphs=True cannot go with calibration= or tune=True, which choose it themselves")
    if calibration is not None and (chosen or tune):
        raise ValueError(f"calibration= chooses the lowering: it cannot go with {', '.join(chosen) or 'tune'}=")
    if tune and (lowering is not None or group_from is not None):
        raise ValueError("tune=True chooses the lowering: it cannot go with lowering= or group_from=")
    if calibrate is not None and not tune:
        raise ValueError("calibrate= keeps what tune=True measured: pass tune=True")
    if retune and not tune:
        raise ValueError("retune=True measures a plan again: pass tune=True")
    if channel_block is not None and not 0 <= int(channel_block) <= 256:
        raise ValueError(f"channel_block must be 0 (no padding) to 256, not {channel_block}")
    return _call(
        FuseReport,
        _fusec.fuse,
        _paths(members),
        os.fspath(output),
        lowering or "regions",
        float(0.25 if group_from is None else group_from),
        bool(keep_bn),
        bool(member_subgraphs),
        None if channel_block is None else int(channel_block),
        # Nothing chosen: fusec notes that the default is unmeasured here.
        calibration is None and not tune and lowering is None and group_from is None and not member_subgraphs,
        None if calibration is None else os.fspath(calibration),
        precision,
        bool(explain),
        int(tune_runs) if tune else None,
        None if calibrate is None else os.fspath(calibrate),
        bool(retune),
        runtime,
        device,
        threads,
        *_arch(arch, image_size, batch, seq_len),
        bool(progress),
    )


def verify(
    model: PathLike,
    members: Sequence[PathLike],
    *,
    inputs: Union[None, PathLike, Arrays] = None,
    images: int = 2,
    runtime: str = "ort",
    device: str = "cpu",
    threads: Optional[int] = None,
    cuda_graph: bool = False,
    precision: str = "fp32",
    atol: Optional[float] = None,
    rtol: Optional[float] = None,
    warmup: int = 3,
    runs: int = 20,
    sessions: int = 4,
    arch: Optional[str] = None,
    image_size: Optional[int] = None,
    batch: Optional[int] = None,
    seq_len: Optional[int] = None,
    progress: bool = True,
) -> VerifyReport:
    """Checks a fused ONNX model against its members, as ``fusec verify``:
    every output (max abs, relative L2, cosine, elements outside
    ``atol``/``rtol``), and speed (``runs`` timed rounds, 0 for none,
    split among ``sessions`` sessions of each model made afresh).

    ``inputs``: a ``.safetensors`` file, or a dict of numpy arrays named as
    the model's inputs; default: ``images`` deterministic random inputs.
    ``device="cuda"`` needs an ONNX Runtime with the CUDA provider
    (``scripts/install-ort-gpu.sh``); ``cuda_graph=True`` replays CUDA
    graphs; ``precision="fp16"`` makes every model compute in fp16.
    Raises :class:`MismatchError` (with the report) when an output differs.

    >>> r = fusec.verify("super.onnx", members, inputs="input.safetensors", runs=0)
    >>> r.equivalent, len(r.outputs)
    (True, 30)
    """
    input_file, input_tensors = _inputs(inputs)
    return _call(
        VerifyReport,
        _fusec.verify,
        os.fspath(model),
        _paths(members),
        input_file,
        input_tensors,
        int(images),
        runtime,
        device,
        threads,
        bool(cuda_graph),
        precision,
        atol,
        rtol,
        int(warmup),
        int(runs),
        int(sessions),
        *_arch(arch, image_size, batch, seq_len),
        bool(progress),
    )


def bench(
    members: Sequence[PathLike],
    *,
    inputs: Union[None, PathLike, Arrays] = None,
    runtime: str = "ort",
    device: str = "cpu",
    threads: Optional[int] = None,
    cuda_graph: bool = False,
    precision: str = "fp32",
    warmup: int = 3,
    runs: int = 20,
    sessions: int = 4,
    json_out: Optional[PathLike] = None,
    markdown_out: Optional[PathLike] = None,
    calibrate: Optional[PathLike] = None,
    tune: bool = False,
    tune_runs: int = 10,
    arch: Optional[str] = None,
    image_size: Optional[int] = None,
    batch: Optional[int] = None,
    seq_len: Optional[int] = None,
    progress: bool = True,
) -> BenchReport:
    """Benchmarks, in one interleaved run, the members one after another
    against fused models with several lowerings, as ``fusec bench``:
    ``runs`` timed rounds split among ``sessions`` sessions of each model,
    each made afresh (one session's luck can move it by 5-30%).

    >>> r = fusec.bench(members, runs=20)
    >>> r.fastest, round(r.row(r.fastest).speedup_p50, 2)
    ('fused, regions from 0.25', 1.08)
    """
    input_file, input_tensors = _inputs(inputs)
    opt = lambda p: None if p is None else os.fspath(p)  # noqa: E731
    return _call(
        BenchReport,
        _fusec.bench,
        _paths(members),
        input_file,
        input_tensors,
        runtime,
        device,
        threads,
        bool(cuda_graph),
        precision,
        int(warmup),
        int(runs),
        int(sessions),
        opt(json_out),
        opt(markdown_out),
        opt(calibrate),
        int(tune_runs) if tune else None,
        *_arch(arch, image_size, batch, seq_len),
        bool(progress),
    )


def inspect(
    path: PathLike,
    *,
    arch: Optional[str] = None,
    image_size: Optional[int] = None,
    batch: Optional[int] = None,
    seq_len: Optional[int] = None,
) -> InspectReport:
    """A model's inputs, outputs, op histogram and parameters (ONNX), or a
    checkpoint's tensors and recognized architecture, as ``fusec inspect``.

    >>> r = fusec.inspect("super.onnx")
    >>> r.inputs[0].name, r.inputs[0].shape, r.nodes
    ('image', [1, 3, 512, 512], 874)
    """
    return _call(InspectReport, _fusec.inspect, os.fspath(path), *_arch(arch, image_size, batch, seq_len))


def run(
    model: PathLike,
    inputs: Arrays,
    *,
    runtime: str = "ort",
    device: str = "cpu",
    threads: Optional[int] = None,
    cuda_graph: bool = False,
    precision: str = "fp32",
    arch: Optional[str] = None,
    image_size: Optional[int] = None,
    batch: Optional[int] = None,
    seq_len: Optional[int] = None,
) -> Dict[str, Any]:
    """Runs a model (ONNX, or a checkpoint) on numpy arrays named as its
    inputs, as ``fusec run``; its outputs as float32 numpy arrays, in the
    model's order (a fused model's are ``MEMBER/OUTPUT``).

    >>> outs = fusec.run("super.onnx", {"image": np.zeros((1, 3, 512, 512), np.float32)})
    >>> list(outs)[:2]
    ['coco/class_out_0', 'coco/class_out_1']
    """
    import numpy as np

    try:
        outputs, _notes, warns = _fusec.run(
            os.fspath(model), _tensors(inputs), runtime, device, threads, bool(cuda_graph), precision, *_arch(arch, image_size, batch, seq_len)
        )
    except _fusec.Failure as e:
        raise _error(e) from None
    for w in warns:
        _warnings.warn(w, stacklevel=2)
    return {name: np.frombuffer(data, dtype="<f4").reshape(shape).copy() for name, shape, data in outputs}
