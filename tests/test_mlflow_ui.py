"""`tune-lsd ui` looked at the way users look at it: the MLflow UI in headless Chromium."""

from __future__ import annotations

import pytest
from browser import chromium_page, screenshot, wait_for_http
from mlflow.tracking import MlflowClient
from playwright.sync_api import expect
from searching import free_port, kill_tree, start_tune_lsd

from tune_lsd.tracking import default_tracking_uri

# Both modules write beside the shared ASHA search (a report, a UI log): one worker runs them.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("asha-folder")]


@pytest.fixture(scope="module")
def ui(asha_search):
    """The UI of the shared ASHA search's store on a free port; yields (base URL, experiment, runs)."""
    folder, _ = asha_search
    client = MlflowClient(default_tracking_uri(folder / "runs"))
    experiment = client.get_experiment_by_name("asha")
    runs = client.search_runs([experiment.experiment_id])
    port = free_port()
    server = start_tune_lsd("ui", "--port", str(port), cwd=folder, log=folder / "ui.log")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", timeout_s=90)
        yield f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}", experiment, runs
    finally:
        kill_tree(server)


def close_assistant(page) -> None:
    """Close MLflow's assistant side panel, if shown, so screenshots show the runs."""
    close = page.locator('button[aria-label="Close"]')
    if close.count():
        close.first.click()


def trial_runs(runs: list) -> list:
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def test_runs_table_shows_the_search_and_its_nested_trials(ui):
    base, experiment, runs = ui
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    with chromium_page() as page:
        page.goto(f"{base}/runs")
        page.get_by_text("Training runs").first.wait_for()  # opened on the training view, not the GenAI overview
        page.locator(f'a[href$="/runs/{parent.info.run_id}"]').wait_for()
        page.locator('button[data-component-id*="runnamecellrenderer"]').first.click()  # expand the parent run
        for trial in trial_runs(runs):
            page.locator(f'a[href$="/runs/{trial.info.run_id}"]').wait_for()
        assert experiment.name in page.inner_text("main")
        assert f"{len(runs)} matching runs" in page.inner_text("main")
        close_assistant(page)
        screenshot(page, "mlflow-ui-runs")


def test_a_trials_metric_chart_and_checkpoint_artifact_are_visible(ui):
    base, _, runs = ui
    trial = max(trial_runs(runs), key=lambda r: r.data.metrics["best/val/recall_at_1"])
    with chromium_page() as page:
        page.goto(f"{base}/runs/{trial.info.run_id}/model-metrics")
        page.get_by_text(trial.info.run_name).first.wait_for()
        page.get_by_placeholder("Search metric charts").fill("val/recall_at_1")  # the validation curve only
        cards = page.locator('[data-testid="experiment-view-compare-runs-card"]')
        cards.last.locator("path.js-line").first.wait_for()  # a drawn curve, not an empty frame
        expect(cards).to_have_count(2)  # val/recall_at_1 and best/val/recall_at_1, once the filter has applied
        assert all("recall_at_1" in text for text in cards.all_inner_texts())
        close_assistant(page)
        screenshot(page, "mlflow-ui-trial-metrics")

        page.goto(f"{base}/runs/{trial.info.run_id}/artifacts")
        page.get_by_text("config.yaml", exact=True).first.wait_for()  # the artifact tree has loaded
        close_assistant(page)
        page.get_by_text("checkpoint", exact=True).first.click()
        page.get_by_text("model.pt", exact=True).first.wait_for()  # visible inside the expanded folder
        screenshot(page, "mlflow-ui-trial-artifacts")
