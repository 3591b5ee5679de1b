"""tune_lsd/report/: the search report (read in headless Chromium) and `tune-lsd ls`."""

from __future__ import annotations

import re

import pytest
from browser import chromium_page, screenshot
from mlflow.tracking import MlflowClient
from searching import tune_lsd

from search_spaces.loader import load_space
from tune_lsd.report import load_trials, optuna_study
from tune_lsd.tracking import STATE_TAG, default_tracking_uri

# Both modules write beside the shared ASHA search (a report, a UI log): one worker runs them.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("asha-folder")]


@pytest.fixture(scope="module")
def report(asha_search):
    folder, _ = asha_search
    result = tune_lsd("report", "asha", cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, folder / "runs" / "reports" / "asha"


def recorded_trials(folder):
    client = MlflowClient(default_tracking_uri(folder / "runs"))
    experiment = client.get_experiment_by_name("asha")
    runs = client.search_runs([experiment.experiment_id])
    return (
        client,
        [r for r in runs if "mlflow.parentRunId" in r.data.tags],
        [r for r in runs if "mlflow.parentRunId" not in r.data.tags][0],
    )


def test_report_page_shows_every_plot_and_the_trials_sorted_by_the_metric(report):
    folder, out = report
    _, trials, _ = recorded_trials(folder)
    with chromium_page(width=1200) as page:
        page.goto((out / "report.html").as_uri())
        for plot in ("curves", "parallel", "importance", "lsd"):
            image = page.locator(f'img[data-plot="{plot}"]')
            assert image.evaluate("img => img.complete && img.naturalWidth") > 300, plot  # decoded, not broken
        rows = page.locator("#trials tr").all_inner_texts()[1:]
        screenshot(page, "search-report", full_page=True)
    assert len(rows) == len(trials) == 6
    shown = [float(row.split("\t")[4]) for row in rows]
    assert shown == sorted(shown, reverse=True)
    assert shown[0] == pytest.approx(max(r.data.metrics["best/val/recall_at_1"] for r in trials), abs=1e-4)
    states = [row.split("\t")[2] for row in rows]
    assert states.count("stopped early") == sum(r.data.tags[STATE_TAG] == "stopped early" for r in trials) > 0
    completed = states.count("completed")  # hyperparameters are compared on full trials when there are 3+
    assert (f"use the {completed} of 6 trials that ran every epoch" in (out / "report.html").read_text()) == (
        completed >= 3
    )


def test_report_is_logged_on_the_parent_run_and_names_the_best_config(report):
    folder, out = report
    client, trials, parent = recorded_trials(folder)
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/curves.png", "report/importance.png"} <= logged
    best = max(trials, key=lambda r: r.data.metrics["best/val/recall_at_1"])
    page = (out / "report.html").read_text()
    assert f"Best: <b>{best.info.run_name}</b>" in page
    assert f"lr: {best.data.params['optim.lr']}" in page  # the best trial's full config, as it ran


def test_optuna_study_of_the_report_holds_the_sampled_values_and_their_distributions(asha_search):
    folder, _ = asha_search
    trials = load_trials(default_tracking_uri(folder / "runs"), "asha", "val/recall@1")
    params = load_space("lsd").params
    study = optuna_study(trials, params, "max")
    assert len(study.trials) == 6 and study.best_value == trials[0].best
    for frozen, trial in zip(study.trials, trials):
        assert frozen.params == {k: v for k, v in trial.sampled.items() if v is not None}
        assert all(frozen.distributions[k] == params[k].optuna_distribution() for k in frozen.params)
    assert ("lsd.ema_momentum" in frozen.params) == (frozen.params["lsd.teacher"] == "ema")


def test_learning_curves_are_read_for_the_best_trials_only_and_every_trial_keeps_its_epochs(asha_search):
    folder, _ = asha_search
    everything = load_trials(default_tracking_uri(folder / "runs"), "asha", "val/recall@1")
    best_two = load_trials(default_tracking_uri(folder / "runs"), "asha", "val/recall@1", curves=2)
    assert [t.run_id for t in best_two] == [t.run_id for t in everything]
    assert [t.curve for t in best_two[:2]] == [t.curve for t in everything[:2]] and all(best_two[0].curve)
    assert all(t.curve == [] for t in best_two[2:])
    assert [t.epochs for t in best_two] == [len(t.curve) for t in everything]  # (one point per epoch)


def test_ls_lists_the_search_with_its_state_trials_and_best(report):
    folder, _ = report
    _, trials, _ = recorded_trials(folder)
    result = tune_lsd("ls", cwd=folder)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("asha "))
    best = max(r.data.metrics["best/val/recall_at_1"] for r in trials)
    assert re.match(rf"asha\s+completed\s+6\s+0\s+{best:.4f}\s", line), line


def test_report_of_an_unknown_search_is_one_line(asha_search):
    folder, _ = asha_search
    result = tune_lsd("report", "nope", cwd=folder)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: no search named 'nope' in {default_tracking_uri(folder / 'runs')}"
    ]


def test_retrieval_examples_decode_and_their_frames_follow_the_labels(report):
    _, out = report
    with chromium_page(width=1200) as page:
        page.goto((out / "report.html").as_uri())
        tables = page.locator("table.retrieval")
        assert tables.count() == 2  # queries drawn at random, then the worst
        cells = page.locator("table.retrieval td.neighbour").evaluate_all("""cells => cells.map(cell => {
            const img = cell.querySelector('img');
            return {verdict: cell.dataset.verdict, label: cell.dataset.label,
                    query: cell.parentElement.querySelector('td.query').dataset.label,
                    row: cell.parentElement.rowIndex,
                    table: [...document.querySelectorAll('table.retrieval')].indexOf(cell.closest('table')),
                    colour: getComputedStyle(img).borderTopColor, width: img.complete ? img.naturalWidth : 0};
        })""")
        tables.first.scroll_into_view_if_needed()
        screenshot(page, "report-retrieval-examples")
    assert len(cells) == (12 + 6) * 5
    assert all(cell["width"] > 0 for cell in cells)  # every thumbnail decoded
    green, red = "rgb(26, 158, 58)", "rgb(209, 31, 31)"
    for cell in cells:
        assert cell["verdict"] == ("correct" if cell["label"] == cell["query"] else "wrong")
        assert cell["colour"] == (green if cell["verdict"] == "correct" else red)
    assert {cell["verdict"] for cell in cells} == {"correct", "wrong"}
    worst_correct = [
        sum(c["verdict"] == "correct" for c in cells if c["table"] == 1 and c["row"] == row) for row in range(6)
    ]
    assert worst_correct == sorted(worst_correct)  # fewest correct neighbours first


def test_the_importance_of_many_trials_comes_from_a_seeded_sample_and_says_so(asha_search, tmp_path, monkeypatch):
    from tune_lsd.report import page

    folder, _ = asha_search
    monkeypatch.setattr(page, "IMPORTANCE_TRIALS", 2)  # (300 in use: fANOVA's time grows faster than the trials)
    uri = default_tracking_uri(folder / "runs")

    html = page.write_report(uri, "asha", tmp_path / "sampled", log_to_mlflow=False).read_text()
    again = page.write_report(uri, "asha", tmp_path / "again", log_to_mlflow=False).read_text()

    assert re.search(r"From 2 of the \d+ trials, drawn at random", html), html[:3000]
    assert (tmp_path / "sampled" / "importance.png").read_bytes() == (
        tmp_path / "again" / "importance.png"
    ).read_bytes()
    assert "From 2 of the" in again
