"""The Python API of the `fusec` wheel (scripts/test-wheel.sh installs it
into a fresh virtual environment): the same reports and numbers as the
command's `--json`, typed exceptions, numpy in and out, the GIL released."""

import json
import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import fusec

# Every call on the reference state_dicts warns that it assumed the PyTorch
# variant (tested in test_fuse_reports_what_the_command_reports).
pytestmark = pytest.mark.filterwarnings("ignore:assumed the PyTorch-trained variant")

REFERENCE = Path(os.environ.get("FUSEC_REFERENCE_DIR", Path(__file__).parents[2] / "../shared/reference/efficientdet_d0"))
MEMBERS = [str(REFERENCE / f"{m}.safetensors") for m in ("coco", "aquarium", "vehicles")]
INPUT = str(REFERENCE / "input.safetensors")
TIMINGS = {"load_ms", "fuse_ms", "export_ms"}


def cli_json(*args):
    """The `fusec` command's --json object (stderr) and exit code."""
    env = {k: v for k, v in os.environ.items() if k != "ORT_DYLIB_PATH"}
    res = subprocess.run(["fusec", *map(str, args), "--json"], capture_output=True, text=True, env=env)
    return json.loads(res.stderr), res.returncode


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "super.onnx"
    report = fusec.fuse(MEMBERS, out, progress=False)
    return out, report


def test_fuse_reports_what_the_command_reports(fused, tmp_path):
    out, report = fused
    assert isinstance(report, fusec.FuseReport)
    assert (report.nodes, report.convs, report.format, report.precision) == (874, 324, "onnx", "fp32")
    assert [m.name for m in report.members] == ["coco", "aquarium", "vehicles"]
    assert report.size_bytes == out.stat().st_size
    assert report.notes[-1].startswith(f"wrote {out} (3 members, 874 nodes, 324 Conv")
    assert any("assumed the PyTorch-trained variant" in w for w in report.warnings)
    # Nothing chosen: the default lowering, said to be unmeasured here.
    assert any("not measured for these members: --tune" in n for n in report.notes), report.notes
    cli, rc = cli_json("fuse", *MEMBERS, "-o", out)
    assert rc == 0
    assert any("not measured for these members: --tune" in n for n in cli["notes"]), cli["notes"]
    strip = lambda d: {k: v for k, v in d.items() if k not in TIMINGS}  # noqa: E731
    assert strip(report.to_dict()) == strip(cli["report"])
    # The same bytes either way.
    again = tmp_path / "again.onnx"
    fusec.fuse(MEMBERS, again, progress=False)
    assert again.read_bytes() == out.read_bytes()


def test_member_subgraphs_fuse_and_verify(tmp_path):
    out = tmp_path / "subgraphs.onnx"
    report = fusec.fuse(MEMBERS[:2], out, lowering="separate", member_subgraphs=True, progress=False)
    assert report.lowering["member_subgraphs"] is True and report.lowering["lowering"] == "separate"
    # Nothing padded: a lowering that groups nothing keeps the members' convs.
    assert report.lowering["channel_block"] == 0
    assert not any("not measured" in n for n in report.notes), report.notes
    assert out.read_bytes().count(b"\x22\x04Scan") == 2
    checked = fusec.verify(out, MEMBERS[:2], inputs=INPUT, runs=0, progress=False)
    assert checked.equivalent and all(o.outside == 0 for o in checked.outputs)
    with pytest.raises(ValueError, match="member_subgraphs"):
        fusec.fuse(MEMBERS[:2], out, member_subgraphs=True, tune=True, progress=False)


def test_channel_block_zero_fuses_unpadded(tmp_path):
    padded, unpadded = tmp_path / "padded.onnx", tmp_path / "unpadded.onnx"
    a = fusec.fuse(MEMBERS[:2], padded, lowering="grouped", progress=False)
    b = fusec.fuse(MEMBERS[:2], unpadded, lowering="grouped", channel_block=0, progress=False)
    assert (a.lowering["channel_block"], b.lowering["channel_block"]) == (16, 0)
    assert unpadded.stat().st_size < padded.stat().st_size, "padding adds zero filters"
    checked = fusec.verify(unpadded, MEMBERS[:2], inputs=INPUT, runs=0, progress=False)
    assert checked.equivalent and all(o.outside == 0 for o in checked.outputs)
    with pytest.raises(ValueError, match="channel_block"):
        fusec.fuse(MEMBERS[:2], tmp_path / "x.onnx", channel_block=4096, progress=False)


def test_verify_gives_the_numbers_of_the_command(fused):
    out, _ = fused
    report = fusec.verify(out, MEMBERS, inputs=INPUT, runs=0, progress=False)
    assert report.equivalent and report.failed == [] and report.speed is None
    assert len(report.outputs) == 30 and all(o.outside == 0 for o in report.outputs)
    assert [(d.member, d.fused_detections, d.diff.count) for d in report.detections] == [
        ("coco", 100, 100), ("aquarium", 100, 100), ("vehicles", 100, 100)]
    cli, rc = cli_json("verify", out, "--members", *MEMBERS, "--input", INPUT, "--runs", "0")
    assert rc == 0
    assert report.to_dict() == cli["report"]


def test_verify_times_and_says_the_speedup(fused):
    out, _ = fused
    report = fusec.verify(out, MEMBERS[:1] + MEMBERS[1:], images=1, runs=2, warmup=1, progress=False)
    rows = report.speed.rows
    assert [r.config for r in rows] == ["members one after another", "fused"]
    assert rows[0].speedup_p50 == 1.0 and rows[0].speedup_p50_interval is None
    assert report.speedup == rows[1].speedup_p50 == pytest.approx(rows[0].stats.p50_ms / rows[1].stats.p50_ms)
    assert report.generated_inputs and report.inputs == 1
    # The 2 rounds split among 2 sessions of each model made afresh (at
    # most one per round), or all in one when asked.
    assert report.speed.sessions == 2 and all(r.stats.runs == 2 for r in rows)
    one = fusec.verify(out, MEMBERS, images=1, runs=2, warmup=1, sessions=1, progress=False)
    assert one.speed.sessions == 1 and all(r.stats.runs == 2 for r in one.speed.rows)


def test_numpy_in_and_out_match_pytorchs_outputs(fused):
    out, _ = fused
    image = load_file(INPUT)["image"]
    outs = fusec.run(out, {"image": image})
    assert len(outs) == 30 and all(a.dtype == np.float32 for a in outs.values())
    for member in ("coco", "aquarium", "vehicles"):
        want = load_file(str(REFERENCE / f"{member}.outputs.safetensors"))
        # The head outputs (the file also holds PyTorch's decoded detections).
        heads = [n for n in want if f"{member}/{n}" in outs]
        assert len(heads) == 10, sorted(want)
        for name in heads:
            w, got = want[name], outs[f"{member}/{name}"]
            assert got.shape == w.shape
            assert np.abs(got - w).max() <= 1e-4, (member, name)
    # Arrays as verify's inputs too.
    report = fusec.verify(out, MEMBERS, inputs={"image": image}, runs=0, progress=False)
    assert report.equivalent and not report.generated_inputs


def test_a_mismatch_raises_with_the_report(fused):
    out, _ = fused
    with pytest.raises(fusec.MismatchError) as e:
        fusec.verify(out, MEMBERS, inputs=INPUT, runs=0, atol=1e-12, rtol=0.0, progress=False)
    err = e.value
    assert err.kind == "mismatch" and err.exit_code == 1 and err.file == str(out)
    assert not err.report.equivalent and err.report.failed
    assert sum(o.outside for o in err.report.outputs) > 0


def test_a_hostile_checkpoint_raises_input_error_naming_it(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"x\":{\"dtype\":\"F32\"")
    out = tmp_path / "super.onnx"
    out.write_bytes(b"the good model from yesterday")
    with pytest.raises(fusec.InputError) as e:
        fusec.fuse([bad, MEMBERS[0]], out, progress=False)
    assert e.value.file == str(bad) and e.value.exit_code == 2
    assert str(bad) in str(e.value)
    assert out.read_bytes() == b"the good model from yesterday"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors", "super.onnx"]
    # A wrong input names the tensor.
    with pytest.raises(fusec.InputError) as e:
        fusec.run(MEMBERS[0], {"image": np.zeros((1, 3, 64, 64), np.float32)})
    assert e.value.tensor == "image"


def test_a_short_bench_has_the_commands_rows(tmp_path):
    report = fusec.bench(MEMBERS[:2], inputs=INPUT, runs=2, warmup=1, json_out=tmp_path / "b.json", progress=False)
    assert isinstance(report, fusec.BenchReport) and report.members == ["coco", "aquarium"]
    assert len(report.rows) == 17 and report.rows[0].config == "members one after another"
    assert all(r.stats.p50_ms > 0 for r in report.rows)
    assert report.sessions == 2 and all(r.stats.runs == 2 for r in report.rows)
    assert all(r.max_abs <= 1e-4 for r in report.rows if "fp16" not in r.config)
    assert report.row(report.fastest).speedup_p50 == max(r.speedup_p50 for r in report.rows[2:])
    written = json.loads((tmp_path / "b.json").read_text())
    assert [r["config"] for r in written["rows"]] == [r.config for r in report.rows]
    assert written.keys() == report.to_dict().keys()


def test_inspect(fused):
    out, _ = fused
    r = fusec.inspect(out)
    assert (r.format, r.nodes, r.inputs[0].name, r.inputs[0].shape) == ("onnx", 874, "image", [1, 3, 512, 512])
    assert r.ops[0] == fusec.OpCount("Conv", 324)
    assert r.metadata["fusec.member.0.name"] == "coco"
    cli, _ = cli_json("inspect", out)
    assert r.to_dict() == cli["report"]
    ck = fusec.inspect(MEMBERS[1])
    assert ck.format == "safetensors" and "7 classes" in ck.architecture and ck.parameters > 3_000_000


def test_the_gil_is_released_while_fusec_works(fused):
    out, _ = fused
    done = threading.Event()
    ticks = 0

    def work():
        fusec.verify(out, MEMBERS, inputs=INPUT, runs=3, warmup=1, progress=False)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        ticks += 1
    t.join()
    # Python kept running beside the verify (seconds of it); with the GIL
    # held it could not have counted while the call ran.
    assert ticks > 10_000, ticks


def test_no_progress_and_no_stdout_when_asked(fused, capfd):
    out, _ = fused
    fusec.verify(out, MEMBERS, inputs=INPUT, runs=2, warmup=0, progress=False)
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_stubs_and_markers_ship_in_the_wheel():
    pkg = Path(fusec.__file__).parent
    assert (pkg / "py.typed").exists() and (pkg / "_fusec.pyi").exists()
    assert fusec.fuse.__doc__ and ">>> r = fusec.fuse(" in fusec.fuse.__doc__


def test_fuse_can_tune_and_keep_the_plan(tmp_path):
    out, plan = tmp_path / "tuned.onnx", tmp_path / "plan.json"
    report = fusec.fuse(MEMBERS[:2], out, tune=True, tune_runs=2, calibrate=plan, threads=2, progress=False)
    t = report.tuning
    assert isinstance(t, fusec.TuneReport) and [c.round for c in t.candidates] == [1] * 13 + [2] * 8 + [3] * 8
    assert len(t.plan_runs) == 8 and all(isinstance(r, fusec.PlanRun) for r in t.plan_runs)
    # The choice is made on round 3's speedups over `separate`, per round.
    third = t.candidates[21:]
    assert third[0].over_separate is None and all(c.over_separate > 0 for c in third[1:])
    chosen = next(c for c in third if c.plan == t.chosen)
    assert t.chosen == "00000000" or (chosen.over_separate > 1 and chosen.over_separate_interval[0] >= 0.97)
    # The choice from profiled costs: one digit per node group.
    assert isinstance(t.costs, fusec.CostReport) and len(t.costs.assignment) == report.groups
    assert t.costs.chosen_us <= min(t.costs.separate_us, t.costs.all_grouped_us) + 1e-6
    if t.chosen in ("costs", "costs-subgraphs"):
        assert [r.grouped for r in t.plan_runs] == [r.by_costs > 0 for r in t.plan_runs]
    elif t.chosen == "separate-subgraphs":
        assert not any(r.grouped for r in t.plan_runs)
    elif t.chosen != "default":
        assert [r.grouped for r in t.plan_runs] == [d == "1" for d in t.chosen]
    assert t.plan_runs[-1].groups[1] + 1 == report.groups and all(r.gain > 0 for r in t.plan_runs)
    lowering, digits, group_from = {"costs": ("assigned", t.costs.assignment, 0.0),
                                    "costs-subgraphs": ("assigned", t.costs.assignment, 0.0),
                                    "default": ("regions", None, 0.25),
                                    "separate-subgraphs": ("plan", "00000000", 0.0)}.get(t.chosen, ("plan", t.chosen, 0.0))
    assert report.lowering == {"lowering": lowering, "plan": digits, "group_from": group_from,
                               "keep_bn": False, "split_depthwise": False, "split_pointwise": False,
                               "split_linear": False, "member_axis": True,
                               "member_subgraphs": t.chosen in ("separate-subgraphs", "costs-subgraphs"),
                               "channel_block": 0 if t.chosen in ("separate-subgraphs", "00000000") else 16}
    assert json.loads(plan.read_text()).get("plan") == digits
    again = fusec.fuse(MEMBERS[:2], tmp_path / "again.onnx", calibration=plan, progress=False)
    assert again.tuning is None and again.lowering == report.lowering
    # Kept in the tune cache: tuned again, the plan is reused without measuring.
    cached = fusec.fuse(MEMBERS[:2], tmp_path / "cached.onnx", tune=True, tune_runs=2, threads=2, progress=False)
    assert t.cached is None and cached.tuning.cached is not None and cached.tuning.chosen == t.chosen
    assert (tmp_path / "cached.onnx").read_bytes() == out.read_bytes()
    with pytest.raises(ValueError, match="retune"):
        fusec.fuse(MEMBERS[:2], tmp_path / "x.onnx", retune=True)
    assert (tmp_path / "again.onnx").read_bytes() == out.read_bytes()


def test_fuse_refuses_options_that_contradict_each_other(tmp_path):
    out = tmp_path / "x.onnx"
    for kwargs in ({"calibrate": tmp_path / "p.json"}, {"calibration": tmp_path / "p.json", "tune": True},
                   {"calibration": tmp_path / "p.json", "lowering": "grouped"}, {"tune": True, "lowering": "grouped"}):
        with pytest.raises(ValueError):
            fusec.fuse(MEMBERS[:2], out, progress=False, **kwargs)
    assert not out.exists()
