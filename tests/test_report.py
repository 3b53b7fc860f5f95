"""The report (oe3jax/evaluation/report.py, scripts/report.py, the end of train.py --algo all): on a
finished small run, on a run killed mid-way, on a run of the EV park (its episodes and plots), and on
bad input. Expected numbers come from the progress CSV and the evaluation JSON, computed here."""
from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import dummy_algo
import runner_fixtures as rf
from oe3jax.evaluation import plots as P
from oe3jax.evaluation import report as R
from oe3jax.training.checkpoint import complete_steps
from oe3jax.training.policy import load_policies
from oe3jax.training.progress import CSV_COLUMNS
from oe3jax.training.status import checkpoint_summary

ROOT = Path(__file__).resolve().parent.parent
REPORT = [sys.executable, str(ROOT / "scripts" / "report.py")]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return rf.baseline(tmp_path_factory)


def _png_ok(path: Path, min_bytes: int = 5_000) -> tuple[int, int]:
    """A valid PNG of some content: (width, height)."""
    from PIL import Image

    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > min_bytes, (path, len(raw))
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        width, height = im.size
        colours = len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0))
    assert width >= 400 and height >= 300 and colours > 3, (path, width, height, colours)
    return width, height


def _last_chunk_reward(run_dir: Path, algo: str = "dummy") -> tuple[int, float, int]:
    """(last step, mean reward_avg over the seeds of that step, number of rows) from the CSV itself."""
    with open(run_dir / "progress" / f"{algo}_progress.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    last = max(int(r["step"]) for r in rows)
    vals = [float(r["reward_avg"]) for r in rows if int(r["step"]) == last]
    return last, sum(vals) / len(vals), len(rows)


# a hand-made end-of-training evaluation of the dummy run: three seeds beside the baselines
_SEEDS_CO2 = (2_780_000.0, 2_772_000.0, 2_790_500.0)
_BASE = {
    "uncontrolled": {"co2_kg": 3_025_500.0, "monthly_peaks_sum_kw": 31_086.0, "peak_import_kw": 2_829.0, "ev_unmet_kwh": 28_620.0},
    "rule": {"co2_kg": 2_773_400.0, "monthly_peaks_sum_kw": 30_579.0, "peak_import_kw": 2_777.0, "ev_unmet_kwh": 28_620.0},
    "greedy": {"co2_kg": 2_764_600.0, "monthly_peaks_sum_kw": 31_090.0, "peak_import_kw": 2_829.0, "ev_unmet_kwh": 28_620.0},
    "optimum_grid": {"co2_kg": 2_764_500.0, "monthly_peaks_sum_kw": 31_098.0, "peak_import_kw": 2_835.0, "ev_unmet_kwh": 28_620.0},
}


def _evaluated_copy(base_dir: Path, dst: Path) -> Path:
    run = rf.copy_run(base_dir, dst)
    doc = {}
    for i, co2 in enumerate(_SEEDS_CO2):
        doc[f"seed {i}"] = {"co2_kg": co2, "monthly_peaks_sum_kw": 31_000.0 - 10 * i, "peak_import_kw": 2_800.0,
                            "ev_unmet_kwh": 28_640.0 + i, "hours": 8760, "weather_year": "2024"}
    for name, k in _BASE.items():
        doc[name] = {**k, "hours": 8760, "weather_year": "2024"}
    doc["table"] = "| KPI |"
    (run / "evaluation").mkdir(exist_ok=True)
    (run / "evaluation" / "dummy.json").write_text(json.dumps(doc))
    return run


def _row(md: str, first_cell: str) -> list[str]:
    line = next(l for l in md.splitlines() if l.startswith(f"| {first_cell} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_finished_run_report_numbers_come_from_the_csv_and_the_evaluation(base, tmp_path):
    run = _evaluated_copy(base[0], tmp_path / "run")
    out = tmp_path / "out"
    rep = R.write_report([run], out, checkpoints=checkpoint_summary,
                         load_policies=lambda path, algo: load_policies(path, algo=algo, components=dummy_algo.components()))
    md = rep.path.read_text()
    _png_ok(out / "learning_curves.png")
    assert json.loads((out / "report.json").read_text())["best"] == "dummy"
    # training table: steps, seeds, rows and the last chunk's mean reward, from the CSV
    last, reward, n_rows = _last_chunk_reward(run)
    n_ckpt = len(complete_steps(run / "checkpoints" / "dummy"))
    assert _row(md, "dummy") == ["dummy", "trained", f"{last:,} / 128", "3", _train_time(run), str(n_rows),
                                 f"{reward:.5f}", f"{n_ckpt}, the last at {last} env steps (final)", "yes"]
    # KPI table: the mean over the seeds and its share of the optimum's gain, from the JSON
    mean = sum(_SEEDS_CO2) / 3
    u, o = _BASE["uncontrolled"]["co2_kg"], _BASE["optimum_grid"]["co2_kg"]
    cells = _row(md, "**dummy**")
    assert cells[1].startswith(f"{mean / 1000:,.1f} [") and cells[2].startswith(f"{100 * (u - mean) / (u - o):.1f} % [")
    lo, hi = (float(x.replace(",", "")) for x in cells[1].split("[")[1].rstrip("]").split(", "))
    assert min(_SEEDS_CO2) / 1000 - 0.05 <= lo <= mean / 1000 <= hi <= max(_SEEDS_CO2) / 1000 + 0.05
    # the rule-to-optimum gap, and the difference to the strongest real baseline: the greedy rule
    r = _BASE["rule"]["co2_kg"]
    assert cells[3].startswith(f"{100 * (r - mean) / (r - o):.1f} % [")
    assert cells[4].startswith(f"+{(mean - _BASE['greedy']['co2_kg']) / 1000:,.1f} [")
    assert "difference to the strongest baseline, greedy rule (t)" in md
    assert "strongest baseline on CO2, the objective, is the **greedy rule** (2,764.6 t)" in md
    assert f"- **dummy**: {(mean - _BASE['greedy']['co2_kg']) / 1000:,.1f} t more than it (worse)" in md
    assert cells[5].startswith(f"{31_000 - 10:,.0f} [")  # sum of monthly peaks: mean of 31,000, 30,990, 30,980
    assert cells[6] == "-"  # no optimum of the monthly peaks was run
    assert cells[8].startswith(f"{(28_641.0) / 1000:,.2f} [")
    rule = _row(md, "evening rule")
    assert rule[1:5] == [f"{2_773.4:,.1f}", f"{100 * (u - r) / (u - o):.1f} %", "0.0 %", f"+{(r - 2_764_600.0) / 1000:,.1f}"]
    assert _row(md, "optimum (grid import)")[2:4] == ["100.0 %", "100.0 %"] and _row(md, "uncontrolled")[2] == "0.0 %"
    assert _row(md, "greedy rule")[4] == "+0.0"
    assert "one condition, arrival seed 0" in md and "best agent is **dummy**" in md
    assert f"- best agent: **dummy**, CO2 {mean / 1000:,.1f} [" in md and "the strongest baseline, the greedy rule: 2,764.6 t" in md
    # a pendulum has no PV: the report says so and is partial for that reason alone
    assert rep.partial and len(rep.missing) == 1 and "could not be run" in rep.missing[0]
    assert md.splitlines()[2].startswith("> **Partial report.**") and "EV-park environment" in md


def test_statistics_json_gives_the_intervals_and_shares(base, tmp_path):
    run = _evaluated_copy(base[0], tmp_path / "run")
    policies = {"dummy": {"mean": 2_771_234.0, "ci": [2_770_000.0, 2_772_500.0], "n_runs": 3, "n_conditions": 5}}
    for name, k in _BASE.items():
        policies[name] = {"mean": k["co2_kg"], "ci": [k["co2_kg"] - 900.0, k["co2_kg"] + 800.0], "n_runs": 1, "n_conditions": 5}
    policies["dummy"]["share_of_gain"] = {"defined": True, "mean": 0.9876, "ci": [0.97, 0.995], "n_runs": 3, "n_conditions": 5}
    policies["dummy"]["gap_closed_rule"] = {"defined": True, "mean": 0.2433, "ci": [0.1, 0.4], "n_runs": 3, "n_conditions": 5}
    policies["dummy"]["difference"] = {"mean": 6_634.0, "ci": [5_400.0, 7_900.0], "n_runs": 3, "n_conditions": 5}
    kpis = {"co2_kg": {"policies": policies, "strongest_baseline": "greedy", "optimum": "optimum_grid"},
            "monthly_peaks_sum_kw": {"policies": {}}}
    doc = {"command": "python scripts/evaluate.py run --eval-seeds 5", "hours": 8760, "agents": ["dummy"],
           "agents_info": {"dummy": {"algo": "dummy"}}, "baselines": {n: {} for n in _BASE}, "kpis": kpis,
           "conditions": [{"year": None, "arrival_seed": 1000 + i} for i in range(5)]}
    (run / "evaluation" / "statistics.json").write_text(json.dumps(doc))
    md = R.write_report([run], tmp_path / "out").path.read_text()
    cells = _row(md, "**dummy**")
    assert cells[1:5] == ["2,771.2 [2,770.0, 2,772.5]", "98.8 % [97.0, 99.5]", "24.3 % [10.0, 40.0]",
                          "+6.6 [+5.4, +7.9]"]
    assert "- **dummy**: 6.6 t more than it (worse); it closes 24.3 % [10.0, 40.0] of the rule-to-optimum gap." in md
    assert _row(md, "evening rule")[1] == "2,773.4 [2,772.5, 2,774.2]"
    assert "5 condition(s), arrival seeds 1000-1004" in md and "statistics.json" in md


def test_run_killed_mid_way_gives_a_partial_report(base, tmp_path):
    run = rf.copy_run(base[0], tmp_path / "run")
    ck = run / "checkpoints" / "dummy"
    (ck / "64").rename(ck / "64.orbax-checkpoint-tmp-1")
    csv_path = run / "progress" / "dummy_progress.csv"
    lines = csv_path.read_text().splitlines(keepends=True)
    csv_path.write_text("".join(lines[: 1 + 3 * rf.SEEDS]) + lines[1 + 3 * rf.SEEDS][:10])  # cut mid-line
    proc = subprocess.run(REPORT + [str(run)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "partial report" in proc.stdout
    md = (run / "report" / "report.md").read_text()
    last, reward, n_rows = _last_chunk_reward_cut(csv_path)
    assert last == 96 and n_rows == 3 * rf.SEEDS
    # the checkpoint of 128 steps was not complete: the last complete one holds the CSV's last step
    n_ckpt = len(complete_steps(ck))
    assert n_ckpt == 2 and _row(md, "dummy") == ["dummy", "unfinished (75 %)", "96 / 128", "3", _train_time(run),
                                                 str(n_rows), f"{reward:.5f}", f"{n_ckpt}, the last at {last} env steps",
                                                 "missing"]
    assert "> **Partial report.**" in md and "training not finished, 96 of 128" in md
    assert "last line is cut off" in md and "no end-of-training evaluation" in md
    _png_ok(run / "report" / "learning_curves.png")
    assert not (run / "report" / "dispatch.png").exists()


def _train_time(run_dir: Path) -> str:
    """Each chunk's env steps of all seeds over its steps_per_s, summed over the complete CSV rows."""
    text = (run_dir / "progress" / "dummy_progress.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text[: text.rindex("\n") + 1])))
    rate = {int(r["step"]): float(r["steps_per_s"]) for r in rows}
    prev, seconds = 0, 0.0
    for step in sorted(rate):
        seconds += (step - prev) * rf.SEEDS / rate[step]
        prev = step
    total = int(round(seconds))
    return f"{total // 60} min {total % 60:02d} s"


def _last_chunk_reward_cut(path: Path) -> tuple[int, float, int]:
    text = path.read_text()
    rows = list(csv.DictReader(io.StringIO(text[: text.rindex("\n") + 1])))
    last = max(int(r["step"]) for r in rows)
    vals = [float(r["reward_avg"]) for r in rows if int(r["step"]) == last]
    return last, sum(vals) / len(vals), len(rows)


def test_bad_input_is_one_line_or_a_marked_partial_report(base, tmp_path):
    def one_line(argv: list[str], message: str) -> None:
        proc = subprocess.run(REPORT + argv, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
        assert proc.stderr.startswith("error: ")

    one_line([str(tmp_path / "missing")], "no such directory")
    (tmp_path / "plain").mkdir()
    one_line([str(tmp_path / "plain")], "is not a run directory")
    run = rf.copy_run(base[0], tmp_path / "run")
    one_line([str(run), str(run)], "--out: give an output directory")
    (tmp_path / "afile").write_text("x")
    one_line([str(run), "--out", str(tmp_path / "afile")], "is a file")
    # an empty CSV and a damaged statistics.json: a report marked partial that names them
    (run / "progress" / "dummy_progress.csv").write_text("")
    (run / "evaluation").mkdir(exist_ok=True)
    (run / "evaluation" / "statistics.json").write_text("{not json")
    rep = R.write_report([run], tmp_path / "out")
    md = rep.path.read_text()
    assert rep.partial and "dummy_progress.csv: empty" in md and "no progress rows" in md
    assert "statistics.json: cannot be read" in md
    assert not (tmp_path / "out" / "learning_curves.png").exists()


def test_typical_days_median_of_the_top_and_bottom_deciles():
    rng = np.random.default_rng(3)
    daily = rng.permutation(np.arange(1, 366)).astype(float)     # day d makes daily[d] kWh
    pv = np.repeat(daily / 24.0, 24)
    days = P.typical_days(pv)
    # 36 days per decile: the sunniest are 330..365 kWh, the 19th of them (upper median) 348;
    # the least sunny 1..36, the 19th 19
    assert days["decile_days"] == 36 and days["days"] == 365
    assert daily[days["sunny"]] == 348.0 and daily[days["cloudy"]] == 19.0
    assert P.day_name(0) == "1 Jan" and P.day_name(24 * 59) == "1 Mar" and P.day_name(8759) == "31 Dec"


def test_train_all_writes_the_report_and_a_failure_costs_the_training_nothing(tmp_path, capsys, monkeypatch):
    from oe3jax.training.cli import main, run

    argv = [a if a != "dummy" else "all" for a in rf.ARGV] + ["--run-dir", str(tmp_path / "all"), "--total-steps", "32"]
    results = run(argv, dummy_algo.components())
    assert len(results) == 2
    out = capsys.readouterr().out
    report = tmp_path / "all" / "report"
    assert f"report written to {report / 'report.md'} (partial" in out
    md = (report / "report.md").read_text()
    assert "| dummy2 | trained |" in md and "| dummy | trained |" in md
    _png_ok(report / "learning_curves.png")

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(R, "write_report", broken)
    assert main(argv, dummy_algo.components()) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: the report could not be written (OSError")


def test_evaluation_covers_the_year_whatever_the_training_episodes(monkeypatch):
    """The end-of-training evaluation runs the year from 1 January even when the policy trained on
    one-week episodes (hours=None)."""
    from oe3jax.evaluation import compare
    from oe3jax.learning.policy import Policy
    from oe3jax.simulation.env import make_env

    env, params = make_env("iquitos-38", episode_hours=168, random_start=True)
    seen = []
    monkeypatch.setattr(compare, "episode_kpis", lambda e, p, act, key, hours=None: seen.append(hours) or {})
    pol = Policy(algo="ppo", step=0, config={}, scenario="iquitos-38", seed=0, params=None,
                 apply=lambda p, obs: obs, env=env, env_params=params)
    compare.evaluate_with_baselines({"seed 0": pol}, optimal=False)
    assert seen == [8760] * 4


# ----------------------------------------------------------------------------- the EV park
HOURS = 72


@pytest.fixture(scope="module")
def ev_run(tmp_path_factory):
    """A run directory of the EV park with two agents (constant actions, two seeds and one), its
    end-of-training evaluations made as train.py makes them, and the policies to run."""
    import jax
    import jax.numpy as jnp

    from oe3jax.control.registry import make_controller
    from oe3jax.evaluation.compare import episode_kpis
    from oe3jax.learning.policy import Policy
    from oe3jax.simulation.env import make_env

    run = tmp_path_factory.mktemp("ev") / "run"
    env, params = make_env("iquitos-38", episode_hours=48)
    n = env.scenario.n_sockets

    def apply(p, obs):
        return jnp.concatenate([jnp.reshape(p, (1,)), jnp.ones(n)])

    cfgs = {algo: {"algo": algo, "scenario": "iquitos-38", "seed": 0, "seeds": seeds, "total_steps": 256,
                   "env": {"episode_hours": 48}, "eval": {"seed": 2, "hours": HOURS},
                   algo: {"num_envs": 2}} for algo, seeds in (("ppo", 2), ("a2c", 1))}
    pols = {"ppo": [Policy("ppo", 128, cfgs["ppo"], "iquitos-38", s, jnp.float32(b), apply, env, params)
                    for s, b in ((0, -0.5), (1, -0.2))],
            "a2c": [Policy("a2c", 128, cfgs["a2c"], "iquitos-38", 0, jnp.float32(0.3), apply, env, params)]}
    # the agents and the evening rule as the end-of-training evaluation runs them (same key, same hours);
    # the other baselines' KPIs are made up: the report runs their episodes itself
    key = jax.random.key(2)
    res = {f"{a} seed {p.seed}": episode_kpis(env, params, lambda obs, state, ep, f=p: f(obs), key, HOURS)
           for a, ps in pols.items() for p in ps}
    res["rule"] = episode_kpis(env, params, make_controller("rule", env, params, key, HOURS), key, HOURS)
    for name, scale in (("uncontrolled", 1.1), ("greedy", 0.99)):
        res[name] = {k: v * scale for k, v in res["rule"].items() if isinstance(v, float)}
    (run / "evaluation").mkdir(parents=True)
    (run / "progress").mkdir()
    for algo, ps in pols.items():
        doc = {f"seed {p.seed}": res[f"{algo} seed {p.seed}"] for p in ps}
        doc.update({k: v for k, v in res.items() if k in ("uncontrolled", "rule", "greedy", "optimum_grid")})
        (run / "evaluation" / f"{algo}.json").write_text(json.dumps(doc))
        rows = [",".join(CSV_COLUMNS)]
        for chunk in range(1, 5):
            for s in range(len(ps)):
                cells = {"episode": chunk, "step": 64 * chunk, "reward_avg": -0.1 + 0.01 * chunk + 0.003 * s,
                         "seed": s, "update": chunk}
                rows.append(",".join(str(cells.get(c, "")) for c in CSV_COLUMNS))
        (run / "progress" / f"{algo}_progress.csv").write_text("\n".join(rows) + "\n")
    (run / "config.yaml").write_text(yaml.safe_dump({"algo": "all", "agents": cfgs}))
    return run, pols, res


def test_ev_run_report_plots_and_episodes_agree_with_the_evaluation(ev_run, tmp_path):
    run, pols, res = ev_run
    out = tmp_path / "report"
    rep = R.write_report([run], out, load_policies=lambda path, algo: pols[algo])
    assert not rep.partial, rep.missing
    for name in ("learning_curves", "dispatch", "monthly", "load_duration"):
        _png_ok(out / f"{name}.png")
        assert (out / f"{name}.png").stat().st_size < 150_000
    md = rep.path.read_text()
    data = json.loads((out / "report.json").read_text())
    # the best agent: the lowest mean CO2 over its seeds in the evaluation
    means = {a: np.mean([res[f"{a} seed {p.seed}"]["co2_kg"] for p in ps]) for a, ps in pols.items()}
    best = min(means, key=means.get)
    assert data["best"] == best and f"The best agent is **{best}**" in md
    ep = data["episodes"]
    assert ep["hours"] == HOURS and ep["arrival_seed"] == 2 and ep["optimum"] == "optimum_grid"
    # every policy's episode is the evaluation's: its grid import and monthly peak (January)
    # the seed shown of the two-seed agent: the median one, of two the lower CO2
    ppo_co2 = {s: res[f"ppo seed {s}"]["co2_kg"] for s in (0, 1)}
    shown = {"ppo": f"ppo seed {min(ppo_co2, key=ppo_co2.get)}", "a2c": "a2c seed 0"}
    assert f"{shown['ppo'].replace(' seed ', ' (seed ')})" in str(ep["totals"]["ppo"]["label"])
    for name in ("rule", *pols):
        k = res[shown.get(name, name)]
        assert ep["monthly"][name]["months"] == ["Jan"]
        assert ep["monthly"][name]["grid_import_kwh"][0] == pytest.approx(k["grid_import_kwh"], rel=1e-6)
        assert ep["monthly"][name]["co2_kg"][0] == pytest.approx(k["co2_kg"], rel=1e-6)
        assert ep["monthly"][name]["peak_import_kw"][0] == pytest.approx(k["monthly_peak_jan_kw"], rel=1e-6)
    # the days: with 3 days each decile is one day, so the sunniest and the least sunny by PV
    env, params = pols["ppo"][0].env, pols["ppo"][0].env_params
    daily = np.asarray(params.pv_kw)[0, : HOURS].reshape(3, 24).sum(axis=1)
    sunny, cloudy = int(np.argmax(daily)), int(np.argmin(daily))
    assert (ep["days"]["sunny"]["day"], ep["days"]["cloudy"]["day"]) == (sunny, cloudy)
    assert f"**{sunny + 1} Jan** ({daily[sunny] / 1000:,.1f} MWh of PV)" in md
    assert f"**{cloudy + 1} Jan** ({daily[cloudy] / 1000:,.1f} MWh)" in md
    # KPI table: ppo's mean and interval over its two seeds, a2c's single value
    ppo = [res[f"ppo seed {s}"]["co2_kg"] for s in (0, 1)]
    assert _row(md, "**ppo**")[1].startswith(f"{np.mean(ppo) / 1000:,.1f} [")
    assert _row(md, "**a2c**")[1] == f"{res['a2c seed 0']['co2_kg'] / 1000:,.1f}"
    for section in ("## Dispatch", "## Monthly", "## Load-duration", "![dispatch](dispatch.png)"):
        assert section in md


def test_hidden_under_names_the_curves_another_covers():
    from types import SimpleNamespace as NS

    a, b, c = NS(label="uncontrolled"), NS(label="sac"), NS(label="rule")
    curves = [(a, np.array([2_800.0, 2_500.0]), 3), (c, np.array([2_700.0, 2_400.0]), 3),
              (b, np.array([2_800.0, 2_504.0]), 4)]
    # 4 kW apart is within 0.2 % of 2,800 kW (5.6 kW): the uncontrolled curve lies under sac's
    assert P.hidden_under(curves) == ["uncontrolled: under sac"]
    assert P.hidden_under(curves, rel_tol=0.001) == []


def test_moving_mean_weighs_points_by_their_chunk_length():
    # window 3 around the middle point: (1*2 + 4*2 + 10*1) / (2 + 2 + 1) = 4; the ends see 2 points
    out = P.moving_mean(np.array([1.0, 4.0, 10.0]), 3, np.array([2.0, 2.0, 1.0]))
    assert out.tolist() == pytest.approx([(1 * 2 + 4 * 2) / 4, 4.0, (4 * 2 + 10 * 1) / 3])
    assert P.moving_mean(np.array([1.0, 2.0, 3.0, 4.0]), 2).tolist() == pytest.approx([1.0, 1.5, 2.5, 3.5])


def test_several_runs_side_by_side(base, tmp_path):
    a = _evaluated_copy(base[0], tmp_path / "a")
    b = rf.copy_run(base[0], tmp_path / "b")  # not evaluated
    rep = R.write_report([a, b], tmp_path / "out")
    md = rep.path.read_text()
    assert "| dummy (a) | trained |" in md and "| dummy (b) | trained |" in md
    assert "- dummy (b): no end-of-training evaluation" in md and "best agent: **dummy (a)**" in md
    width, _ = _png_ok(tmp_path / "out" / "learning_curves.png")
    single, _ = _png_ok(_png_source(a, tmp_path))
    assert width > single  # two panels side by side


def _png_source(run: Path, tmp_path: Path) -> Path:
    R.write_report([run], tmp_path / "one")
    return tmp_path / "one" / "learning_curves.png"


def test_under_a_demand_charge_the_monthly_peaks_lead(ev_run, tmp_path):
    run, pols, res = ev_run
    peak = rf.copy_run(run, tmp_path / "peak")
    cfg = yaml.safe_load((peak / "config.yaml").read_text())
    for agent in cfg["agents"].values():
        agent["env"]["reward"] = "peak"
    (peak / "config.yaml").write_text(yaml.safe_dump(cfg))
    md = R.write_report([peak], tmp_path / "out").path.read_text()
    head = _row(md, "policy")
    assert head[1] == "sum of monthly peaks (kW) (objective)" and head[3] == "share of the rule-to-optimum gap"
    # the strongest baseline on the monthly peaks: the lowest of uncontrolled, rule and greedy in the JSON
    real = {b: res[b]["monthly_peaks_sum_kw"] for b in ("uncontrolled", "rule", "greedy")}
    name = {"uncontrolled": "uncontrolled", "rule": "evening rule", "greedy": "greedy rule"}[min(real, key=real.get)]
    assert head[4] == f"difference to the strongest baseline, {name} (kW)"
    assert f"The strongest baseline on sum of monthly peaks, the objective, is the **{name}**" in md
