"""The leaderboard from hand-made results: grouping, seed aggregation, incomplete runs,
separate tables per stream/model, incremental and concurrent updates, and the HTML page."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from strcvit_bench.cli import app
from strcvit_bench.evaluation.metrics import all_metrics
from strcvit_bench.reports import leaderboard as lb

TASKS = [{"name": "a", "family": "vqa", "metric": "exact_match", "first_seen": 0},
         {"name": "b", "family": "ocr", "metric": "anls", "first_seen": 1}]


def fake_run(root: Path, method: str, seed: int, R: list[list[float]], stream: str = "s1", complete: bool = True,
             options: dict | None = None, adapter: list[int] | None = None) -> Path:
    run = root / f"{stream}-{method}-{seed}-{len(R)}-{json.dumps(options or {}, sort_keys=True)}".replace('"', "")
    run.mkdir(parents=True)
    first = [t["first_seen"] for t in TASKS]
    results = {
        "schema_version": 1, "method": method, "method_options": options or {}, "model": "tiny", "seed": seed,
        "stream": {"name": stream, "fingerprint": (stream * 20)[:64], "num_chunks": 3,
                   "composition": [{"a": 10}, {"a": 5, "b": 5}, {"b": 10}]},
        "tasks": TASKS, "accuracy_matrix": R, "base_scores": [0.0, 0.0],
        "metrics": all_metrics(R, first, [0.0, 0.0]), "complete": complete, "completed_chunks": len(R),
        "trainable_params": 1234, "timings": {"train_seconds": 10.0 + seed}, "env": {"commit": "abc"},
    }
    if adapter is not None:
        results["per_chunk"] = [{"adapter_params": n} for n in adapter]
    (run / "results.json").write_text(json.dumps(results))
    return run


def test_groups_aggregate_seeds_and_keep_streams_and_incomplete_runs_apart(tmp_path):
    runs = [
        fake_run(tmp_path, "lora", 0, [[50, 0], [20, 60], [10, 80]]),
        fake_run(tmp_path, "lora", 1, [[40, 0], [30, 50], [20, 60]]),
        fake_run(tmp_path, "replay", 0, [[50, 0], [45, 60], [40, 75]]),
        fake_run(tmp_path, "replay", 1, [[50, 0], [45, 60]], complete=False),
        fake_run(tmp_path, "lora", 0, [[10, 0], [10, 10], [10, 10]], stream="s2"),
        fake_run(tmp_path, "strlora", 0, [[50, 0], [45, 60], [40, 75]], options={"stability": False}),
    ]
    out = tmp_path / "lb"
    summary = lb.update(runs, out, "test")
    assert summary == {"groups": 4, "runs": 6}
    md = (out / "leaderboard.md").read_text()
    assert md.count("## stream") == 2  # s1 and s2 never share a table
    s1 = md.split("## stream")[1]
    lora_row = next(line for line in s1.splitlines() if line.startswith("| lora |"))
    finals = [statistics.fmean([10, 80]), statistics.fmean([20, 60])]  # 45, 40
    half = 12.706204736174707 * statistics.stdev(finals) / 2 ** 0.5  # 95 % t-interval, 1 degree of freedom
    assert f"| lora | 2 | {statistics.fmean(finals):.2f} ± {half:.2f} |" in lora_row
    replay_row = next(line for line in s1.splitlines() if line.startswith("| replay |"))
    assert replay_row.startswith("| replay | 1 | 57.50 |")  # the incomplete seed is not averaged in
    assert "replay, seed 1: 2/3 chunks" in s1
    assert "| strlora[stability=false] | 1 |" in s1  # an ablation is its own row
    rows = list(csv_rows(out))
    assert {(r["stream"], r["method"], r["n"]) for r in rows} == {
        ("s1", "lora", "2"), ("s1", "replay", "1"), ("s1", "strlora[stability=false]", "1"), ("s2", "lora", "1")}
    for kind in ("accuracy", "forgetting", "curves"):
        assert (out / "plots" / f"s1__tiny__lora__{kind}.png").read_bytes()[:4] == b"\x89PNG"
    html = (out / "index.html").read_text()
    assert html.count("<table class='leaderboard'>") == 2 and "http" not in html.split("<body>")[1].split("<script>")[0]


def csv_rows(out: Path):
    import csv

    with open(out / "leaderboard.csv") as f:
        yield from csv.DictReader(f)


def test_adding_runs_is_incremental(tmp_path):
    out = tmp_path / "lb"
    lb.update([fake_run(tmp_path, "lora", 0, [[50, 0], [20, 60], [10, 80]])], out, "x")
    lb.update([fake_run(tmp_path, "ewc", 0, [[50, 0], [30, 60], [25, 80]])], out, "x")
    methods = {r["method"] for r in csv_rows(out)}
    assert methods == {"lora", "ewc"}
    # the same stream/model/method/seed again replaces, not duplicates
    lb.update([fake_run(tmp_path / "again", "ewc", 0, [[0, 0], [0, 0], [0, 0]])], out, "x")
    ewc = next(r for r in csv_rows(out) if r["method"] == "ewc")
    assert ewc["n"] == "1" and float(ewc["final_average_accuracy_mean"]) == 0.0


def _add(args):
    run, out = args
    lb.update([Path(run)], Path(out), "concurrent")


def test_concurrent_writers_lose_nothing(tmp_path):
    runs = [fake_run(tmp_path, m, s, [[50, 0], [20, 60], [10, 80]]) for m in ("lora", "ewc") for s in range(3)]
    out = tmp_path / "lb"
    with multiprocessing.get_context("fork").Pool(3) as pool:
        pool.map(_add, [(str(r), str(out)) for r in runs])
    rows = {r["method"]: r["n"] for r in csv_rows(out)}
    assert rows == {"lora": "3", "ewc": "3"}
    assert not list(out.rglob("*.tmp"))


def test_cli_leaderboard_errors(tmp_path):
    r = CliRunner().invoke(app, ["leaderboard", str(tmp_path / "nope"), "--out", str(tmp_path / "lb")])
    assert r.exit_code == 2 and "no results.json" in r.output


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed here (.ci/run installs it)")
def test_index_html_renders_in_headless_chromium(tmp_path):
    runs = [fake_run(tmp_path, m, 0, [[50, 0], [20, 60], [10, 80]]) for m in ("lora", "replay", "ewc")]
    out = tmp_path / "lb"
    lb.update(runs, out, "x")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    page = (out / "index.html").resolve().as_uri()
    dom = subprocess.run([*flags, "--dump-dom", page], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<tr>") == (1 + 3) + (1 + 2)  # header + a row per method; paired vs lora
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == [], console
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,900", page], capture_output=True,
                   timeout=120, check=True)
    from PIL import Image

    im = Image.open(shot).convert("L")
    lo, hi = im.getextrema()
    assert shot.stat().st_size > 5000 and hi - lo > 100  # text and a table, not a blank page


def test_adapter_parameters_along_the_stream(tmp_path):
    runs = [fake_run(tmp_path, "lora", 0, [[50, 0], [20, 60], [10, 80]], adapter=[100, 100, 100]),
            fake_run(tmp_path, "cram", 0, [[50, 0], [45, 60], [40, 75]], adapter=[100, 160, 170]),
            fake_run(tmp_path, "cram", 1, [[50, 0], [45, 60], [40, 75]], adapter=[100, 140, 190]),
            fake_run(tmp_path, "replay", 0, [[50, 0], [45, 60], [40, 75]])]  # recorded without the curve
    out = tmp_path / "lb"
    lb.update(runs, out, "test")
    md = (out / "leaderboard.md").read_text()
    table = md.split("Adapter parameters after each chunk")[1]
    assert "| lora | 100 | 100 | 100 |" in table and "| cram | 100 | 150 | 180 |" in table  # mean over seeds
    assert "| replay |" not in table
    png = out / "plots" / "s1__tiny__parameters.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "adapter parameters along the stream" in (out / "index.html").read_text()


def _with_items(run: Path, items: list) -> Path:
    from strcvit_bench.evaluation.uncertainty import bootstrap_run

    r = json.loads((run / "results.json").read_text())
    r["item_scores"] = {"chunks": items, "base": None, "test_ids_sha256": "same"}
    r["uncertainty"] = bootstrap_run(items, [t["first_seen"] for t in r["tasks"]], seed=0)
    (run / "results.json").write_text(json.dumps(r))
    return run


def test_intervals_and_paired_differences_in_md_and_csv(tmp_path):
    lora = [fake_run(tmp_path, "lora", s, [[50, 0], [20, 60], [10 + s, 80]]) for s in range(3)]
    replay = [fake_run(tmp_path, "replay", s, [[50, 0], [45, 60], [40 + 2 * s, 75]]) for s in range(3)]
    ewc = [fake_run(tmp_path, "ewc", s, [[50, 0], [20, 60], [10 + s + (1 if s == 1 else -1), 80]]) for s in range(3)]
    out = tmp_path / "lb"
    lb.update(lora + replay + ewc, out, "x")
    md = (out / "leaderboard.md").read_text()
    table = md.split("Paired differences against `lora`")[1]
    replay_row = next(line for line in table.splitlines() if line.startswith("| replay |"))
    # replay's final avg is 12.5 + s/2 points above lora's in seed s: separated
    assert "| replay | 3 | +13.00 [" in replay_row and "not separated" not in replay_row.split("|")[3]
    ewc_row = next(line for line in table.splitlines() if line.startswith("| ewc |"))
    assert "(not separated)" in ewc_row.split("|")[3]  # differences -0.5, +0.5, -0.5
    assert "| lora |" not in table.split("\n\n")[1]  # the reference is not compared with itself
    rows = {r["method"]: r for r in csv_rows(out)}
    assert rows["replay"]["ci_basis"] == "seeds (t)" and float(rows["replay"]["final_average_accuracy_ci95"]) > 0
    assert (out / "plots" / "s1__tiny__average.png").read_bytes()[:4] == b"\x89PNG"


def test_one_seed_rows_show_a_test_item_interval_and_no_std(tmp_path):
    items_a = [[[1, 0] * 10, [0] * 20], [[1, 0] * 10, [1, 1, 0, 0] * 5], [[1, 0] * 10, [1, 1, 1, 0] * 5]]
    items_b = [[[1, 0] * 10, [0] * 20], [[1, 0] * 10, [1, 1, 0, 0] * 5], [[0, 0] * 10, [1, 1, 1, 0] * 5]]
    R = lambda items: [[100 * sum(t) / len(t) for t in row] for row in items]  # noqa: E731
    a = _with_items(fake_run(tmp_path, "lora", 0, R(items_a)), items_a)
    b = _with_items(fake_run(tmp_path, "cram", 0, R(items_b)), items_b)
    out = tmp_path / "lb"
    lb.update([a, b], out, "x")
    rows = {r["method"]: r for r in csv_rows(out)}
    assert rows["lora"]["final_average_accuracy_std"] == ""  # unknown with one seed, not 0.0
    assert rows["lora"]["ci_basis"] == "test items (bootstrap)"
    lo, hi = (float(rows["lora"][f"final_average_accuracy_ci95_{end}"]) for end in ("lo", "hi"))
    assert lo < float(rows["lora"]["final_average_accuracy_mean"]) < hi
    md = (out / "leaderboard.md").read_text()
    cram = next(line for line in md.split("Paired differences")[1].splitlines() if line.startswith("| cram |"))
    assert "| cram | 1 | -25.00 [" in cram  # task a loses its 10 right items of 20 after chunk 2: -50 / 2 tasks


@pytest.mark.parametrize("content", ["[]", "{}", '{"schema_version": 2}', "not json"])
def test_foreign_results_are_refused_before_anything_is_copied(tmp_path, content):
    good = fake_run(tmp_path, "lora", 0, [[50, 0], [20, 60], [10, 80]])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text(content)
    out = tmp_path / "lb"
    r = CliRunner().invoke(app, ["leaderboard", str(good), str(bad), "--out", str(out)])
    assert r.exit_code == 2 and str(bad) in r.output.replace("\n", "") and "Traceback" not in r.output
    assert not list(out.glob("runs/*"))  # the good run was not copied either
    # the store is not poisoned: the good run alone goes in afterwards
    assert CliRunner().invoke(app, ["leaderboard", str(good), "--out", str(out)]).exit_code == 0


def test_string_matrix_and_empty_runs_are_refused(tmp_path):
    run = fake_run(tmp_path, "lora", 0, [[50, 0], [20, 60], [10, 80]])
    r = json.loads((run / "results.json").read_text())
    for broken in ({**r, "accuracy_matrix": [["a", "b"]]}, {**r, "accuracy_matrix": []}):
        (run / "results.json").write_text(json.dumps(broken))
        out = CliRunner().invoke(app, ["leaderboard", str(run), "--out", str(tmp_path / "lb")])
        assert out.exit_code == 2 and "not a strcvit results.json" in out.output.replace("\n", " ")


def test_runs_scored_by_the_authors_rules_get_rows_of_their_own(tmp_path):
    ours = fake_run(tmp_path, "lora", 0, [[50, 0], [20, 60], [10, 80]])
    theirs = fake_run(tmp_path / "authors", "lora", 0, [[55, 0], [25, 65], [15, 85]])
    results = json.loads((theirs / "results.json").read_text())
    results["config"] = {"scoring": "authors"}
    (theirs / "results.json").write_text(json.dumps(results))
    out = tmp_path / "lb"
    assert lb.update([ours, theirs], out, "test")["groups"] == 2
    md = (out / "leaderboard.md").read_text()
    assert "| lora | 1 |" in md and "| lora (authors scoring) | 1 |" in md


def test_the_leaderboard_says_which_machines_made_its_runs(tmp_path):
    """Bits differ between CPU classes (MKL and torch pick AVX2 or AVX-512 code paths), so a
    reader must see where the runs came from to know whether theirs should match."""
    amd = {"cpu_model": "AMD EPYC", "cpu_capability": "AVX2", "torch_threads": 1}
    intel = {"cpu_model": "Intel Xeon", "cpu_capability": "AVX512", "torch_threads": 2}
    runs = []
    for seed, hw in enumerate([amd, amd, intel, None]):
        run = fake_run(tmp_path, "lora", seed, [[50, 0], [20, 60], [10, 80]])
        r = json.loads((run / "results.json").read_text())
        r["env"] = {"commit": "abc", **({"hardware": hw, "versions": {"torch": "2.13.0+cpu"}} if hw else {})}
        (run / "results.json").write_text(json.dumps(r))
        runs.append(run)
    out = tmp_path / "lb"
    lb.update(runs, out, "x")
    md = (out / "leaderboard.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("Runs recorded at commit(s): abc; made on "))
    assert "AMD EPYC (AVX2), 1 thread, torch 2.13.0+cpu; Intel Xeon (AVX512), 2 threads, torch 2.13.0+cpu; " \
           "CPU not recorded" in line
    page = (out / "index.html").read_text()
    assert "Made on AMD EPYC (AVX2), 1 thread, torch 2.13.0+cpu; Intel Xeon (AVX512)" in page


def test_a_run_records_the_cpu_it_was_made_on():
    from strcvit_bench.env import hardware

    hw = hardware()
    assert hw["cpu_model"] and hw["cpu_model"] != "CPU not recorded"
    assert hw["cpu_capability"] in {"DEFAULT", "NO AVX", "AVX2", "AVX512", "ZVECTOR", "VSX", "SVE256", "SVE"} or \
        hw["cpu_capability"].startswith(("AVX", "SVE"))
