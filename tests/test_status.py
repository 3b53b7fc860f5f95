"""scripts/status.py on a finished run, a run killed mid-way, a live one, and bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import runner_fixtures as rf
from oe3jax.training.checkpoint import complete_steps
from oe3jax.training.status import StatusError, format_status, run_status

ROOT = Path(__file__).resolve().parent.parent
STATUS = [sys.executable, str(ROOT / "scripts" / "status.py")]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return rf.baseline(tmp_path_factory)


def _heartbeat(run_dir: Path) -> dict:
    return json.loads((run_dir / "progress" / "dummy_status.json").read_text())


def test_finished_run_agrees_with_csv_and_checkpoints(base):
    run_dir, _ = base
    st = run_status(run_dir)
    (a,) = st["agents"]
    rows = rf.read_rows(run_dir)
    assert st["finished"] and a["state"] == "finished" and not a["alive"]
    assert a["step"] == int(rows[-1]["step"]) == a["total_steps"] == 128 and a["fraction"] == 1.0
    assert a["seeds"] == rf.SEEDS and a["csv_rows"] == len(rows)
    assert a["checkpoints"]["steps"] == complete_steps(run_dir / "checkpoints" / "dummy") == [32, 48, 64]
    assert a["checkpoints"]["last"] == 64 and a["checkpoints"]["final"]
    # the latest losses are the means over the seeds of the last chunk's rows
    last = rows[-rf.SEEDS:]
    assert a["latest"]["actor_loss"] == pytest.approx(sum(float(r["actor_loss"]) for r in last) / rf.SEEDS)
    assert a["latest"]["lr"] == pytest.approx(0.01)
    hb = _heartbeat(run_dir)
    assert hb["step"] == 128 and hb["total_steps"] == 128 and hb["host_rss_bytes"] > 0
    assert hb["device"].startswith("cpu")
    text = format_status(st)
    assert "finished" in text and "checkpoints: 3 (last 64" in text and "pipeline: finished" in text


def test_run_killed_mid_way(base, tmp_path):
    run_dir = rf.copy_run(base[0], tmp_path / "run")
    ck = run_dir / "checkpoints" / "dummy"
    # the process died after the checkpoint of step 48 and one more chunk's CSV rows
    (ck / "64").rename(ck / "64.orbax-checkpoint-tmp-1")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    hb = _heartbeat(run_dir)
    hb.update(pid=dead.pid, phase="training", step=96, steps_per_s=1000.0, started_at=time.time() - 60)
    (run_dir / "progress" / "dummy_status.json").write_text(json.dumps(hb))
    csv_path = run_dir / "progress" / "dummy_progress.csv"
    lines = csv_path.read_text().splitlines(keepends=True)
    csv_path.write_text("".join(lines[: 1 + 3 * rf.SEEDS]) + lines[1 + 3 * rf.SEEDS][:10])  # cut mid-line
    st = run_status(run_dir)
    (a,) = st["agents"]
    assert a["state"] == "stopped" and not a["alive"] and not st["finished"]
    assert a["step"] == 96 and a["checkpoints"]["last"] == 48 and not a["checkpoints"]["final"]
    assert a["csv_rows"] == 3 * rf.SEEDS and any("cut off" in n for n in a["notes"])
    assert a["eta_s"] == pytest.approx((128 - 96) * rf.SEEDS / 1000.0) and a["finish_at"] is None


def test_live_run_has_eta_and_finish_clock(base, tmp_path):
    run_dir = rf.copy_run(base[0], tmp_path / "run")
    hb = _heartbeat(run_dir)
    now = time.time()
    hb.update(pid=os.getpid(), phase="training", step=64, steps_per_s=50.0, started_at=now - 5)
    (run_dir / "progress" / "dummy_status.json").write_text(json.dumps(hb))
    ck = run_dir / "checkpoints" / "dummy"
    for step in (48, 64):
        (ck / str(step)).rename(ck / f"{step}.orbax-checkpoint-tmp-1")
    csv_path = run_dir / "progress" / "dummy_progress.csv"
    csv_path.write_text("".join(csv_path.read_text().splitlines(keepends=True)[: 1 + 2 * rf.SEEDS]))
    st = run_status(run_dir, now=now)
    (a,) = st["agents"]
    assert a["alive"] and a["state"] == "training" and a["host_rss_bytes"] > 0
    assert a["step"] == 64 and a["eta_s"] == pytest.approx((128 - 64) * rf.SEEDS / 50.0)
    assert a["finish_at"] == pytest.approx(now + a["eta_s"]) and st["finish_at"] == pytest.approx(now + a["eta_s"])


def test_cli_json_and_bad_input(base, tmp_path):
    run_dir, _ = base
    out = subprocess.run(STATUS + [str(run_dir), "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and json.loads(out.stdout)["agents"][0]["algo"] == "dummy"
    for bad, message in ((tmp_path / "missing", "no such directory"), (tmp_path, "is not a run directory")):
        proc = subprocess.run(STATUS + [str(bad)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    (tmp_path / "config.yaml").write_text("{not: [yaml")
    proc = subprocess.run(STATUS + [str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "cannot be read" in proc.stderr


def test_empty_csv_is_a_note_not_an_error(base, tmp_path):
    run_dir = rf.copy_run(base[0], tmp_path / "run")
    (run_dir / "progress" / "dummy_progress.csv").write_text("")
    (a,) = run_status(run_dir)["agents"]
    assert a["csv_rows"] == 0 and any("empty" in n for n in a["notes"])
    with pytest.raises(StatusError):
        run_status(tmp_path / "nothing")


class _Terminal(__import__("io").StringIO):
    def isatty(self) -> bool:
        return True


def test_live_progress_bar_on_a_terminal_plain_lines_elsewhere(tmp_path):
    from oe3jax.training.progress import LiveStatus

    plain = __import__("io").StringIO()
    st = LiveStatus(tmp_path, "ppo", total_steps=1000, seeds=2, done_steps=0, print_every_s=0.0, out=plain)
    st.compiled(3.0)
    st.chunk(500, 1.0, -0.25)
    st.chunk(1000, 1.0, -0.125)
    st.close("finished")
    lines = plain.getvalue().splitlines()
    # the rate counts every seed and leaves the compile time out: 1000 steps x 2 seeds in 2 s
    assert lines[-1].startswith("[ppo]") and "1,000/1,000 steps (100.0%)" in lines[-1] and "1,000 steps/s" in lines[-1]
    hb = json.loads((tmp_path / "progress" / "ppo_status.json").read_text())
    assert hb["phase"] == "finished" and hb["steps_per_s"] == pytest.approx(1000.0) and hb["compile_s"] == 3.0
    term = _Terminal()
    st = LiveStatus(tmp_path, "sac", total_steps=100, seeds=1, done_steps=0, print_every_s=0.0, out=term)
    st.say("compiled")
    st.chunk(50, 0.5, -1.0)
    st.close("finished")
    text = term.getvalue()
    assert "sac" in text and "steps/s" in text and "compiled" in text and "[sac]" not in text  # a bar, not lines


def test_a_file_given_as_run_directory_is_called_a_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(StatusError, match=rf"^{afile} is a file, not a run directory$"):
        run_status(afile)
    with pytest.raises(StatusError, match=r"missing: no such directory$"):
        run_status(tmp_path / "missing")
