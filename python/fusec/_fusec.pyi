"""Type stubs of the native module (crates/python): called by fusec/__init__.py."""

from typing import List, Optional, Sequence, Tuple

__version__: str

# (report JSON, notes, warnings)
_Returned = Tuple[str, List[str], List[str]]
# (name, shape, float32 little-endian bytes)
_Tensors = Sequence[Tuple[str, Sequence[int], bytes]]

class Failure(Exception):
    """args: (kind, message, file, node, tensor, report JSON or None, notes, warnings)."""

def main(argv: Sequence[str]) -> int: ...
def set_onnxruntime_package(dir: str) -> None: ...
def fuse(
    members: Sequence[str], output: str, lowering: str, group_from: float, keep_bn: bool, member_subgraphs: bool,
    channel_block: Optional[int], default_lowering: bool, calibration: Optional[str], precision: str, explain: bool, tune_runs: Optional[int],
    tune_calibrate: Optional[str], retune: bool, runtime: str, device: str, threads: Optional[int],
    arch_name: Optional[str], image_size: Optional[int], batch: Optional[int], seq_len: Optional[int], progress: bool,
) -> _Returned: ...
def verify(
    model: str, members: Sequence[str], input_file: Optional[str], input_tensors: Optional[_Tensors],
    images: int, runtime: str, device: str, threads: Optional[int], cuda_graph: bool, precision: str, atol: Optional[float],
    rtol: Optional[float], warmup: int, runs: int, sessions: int, arch_name: Optional[str], image_size: Optional[int],
    batch: Optional[int], seq_len: Optional[int], progress: bool,
) -> _Returned: ...
def bench(
    members: Sequence[str], input_file: Optional[str], input_tensors: Optional[_Tensors], runtime: str,
    device: str, threads: Optional[int], cuda_graph: bool, precision: str, warmup: int, runs: int, sessions: int,
    json_out: Optional[str],
    markdown_out: Optional[str], calibrate: Optional[str], tune_runs: Optional[int], arch_name: Optional[str],
    image_size: Optional[int], batch: Optional[int], seq_len: Optional[int], progress: bool,
) -> _Returned: ...
def inspect(
    path: str, arch_name: Optional[str], image_size: Optional[int], batch: Optional[int], seq_len: Optional[int],
) -> _Returned: ...
def run(
    model: str, input_tensors: _Tensors, runtime: str, device: str, threads: Optional[int], cuda_graph: bool, precision: str,
    arch_name: Optional[str], image_size: Optional[int], batch: Optional[int], seq_len: Optional[int],
) -> Tuple[List[Tuple[str, List[int], bytes]], List[str], List[str]]: ...
