"""The `fusec` wheel, installed with pip into a fresh virtual environment
(scripts/test-wheel.sh), used as a user would: the `fusec` command on PATH,
ONNX Runtime found from the `onnxruntime` package pip installed beside it
(no ORT_DYLIB_PATH), on the reference three-detector set."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REFERENCE = Path(os.environ.get("FUSEC_REFERENCE_DIR", Path(__file__).parents[2] / "../shared/reference/efficientdet_d0"))
MEMBERS = [str(REFERENCE / f"{m}.safetensors") for m in ("coco", "aquarium", "vehicles")]


def fusec(*args, check=True):
    env = {k: v for k, v in os.environ.items() if k != "ORT_DYLIB_PATH"}
    res = subprocess.run(["fusec", *map(str, args)], capture_output=True, text=True, env=env)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def test_the_command_on_path_is_the_wheels():
    exe = Path(shutil.which("fusec")).resolve()
    assert exe.parent.parent == Path(os.environ["VIRTUAL_ENV"]).resolve(), exe
    assert fusec("--version").stdout.startswith("fusec 0.1.0")


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel") / "super.onnx"
    res = fusec("fuse", *MEMBERS, "-o", out, "--json")
    report = json.loads(res.stderr)
    assert report["notes"][-1].startswith(f"wrote {out} (3 members, 874 nodes, 324 Conv"), report
    return out


def test_fuse_and_verify_on_onnx_runtime(fused):
    res = fusec("verify", fused, "--members", *MEMBERS, "--input", REFERENCE / "input.safetensors",
                "--runtime", "ort", "--runs", "2", "--warmup", "1")
    assert "equivalence: ok (30 outputs compared" in res.stdout, res.stdout
    assert "speed on ort (cpu" in res.stdout, res.stdout
    for m in ("coco", "aquarium", "vehicles"):
        assert f"| 1 | {m} | 100 / 100 | 100 |" in res.stdout, res.stdout


def test_a_short_bench_writes_its_json(tmp_path):
    out = tmp_path / "bench.json"
    fusec("bench", *MEMBERS[:2], "--input", REFERENCE / "input.safetensors", "--runtime", "ort",
          "--runs", "2", "--warmup", "1", "--json-out", out)
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 17 and rows[0]["config"] == "members one after another"
    assert all(r["p50_ms"] > 0 for r in rows)
    assert all(r["max_abs"] <= 1e-4 for r in rows if "fp16" not in r["config"])


def test_a_hostile_checkpoint_is_an_input_error_and_the_output_stays(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"x\":{\"dtype\":\"F32\"")
    out = tmp_path / "super.onnx"
    out.write_bytes(b"the good model from yesterday")
    res = fusec("fuse", bad, MEMBERS[0], "-o", out, "--json", check=False)
    assert res.returncode == 2, res.stderr
    err = json.loads(res.stderr)["error"]
    assert err["kind"] == "input" and err["file"] == str(bad), err
    assert out.read_bytes() == b"the good model from yesterday"
