"""The deviation explorer as a user meets it: real JupyterLab, real headless Chromium.

A JupyterLab server is started on 127.0.0.1 (free port, token auth) over a
temporary copy of the notebooks, the deviation-map notebook is opened in
Debian's Chromium through Playwright (``executable_path``; never a browser
download), all cells are run, and the explorer widget is driven like a user
would: slider, threshold, region choice, subject choice.

The explorer only needs a cohort and a trained model, so by default it runs on
the smoke run the notebook tests make anyway (``smoke_run``: tiny cohort, tiny
model, a few seconds per cell). Set ``NBUTILS_REUSE_QUICK=DIR`` to drive it on
the ``reports/`` and ``data/`` of an earlier ``make demo`` in DIR (e.g. ``.``)
instead; the screenshots then go to ``DIR/reports/screenshots/`` (the README's
pictures), otherwise beside the smoke run's reports.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NOTEBOOK = "03_deviation_maps"
SCREENSHOTS = REPO / "reports" / "screenshots"  # set by the `page` fixture
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    # the first test pays for the session's smoke run (~6 min here) before JupyterLab starts
    pytest.mark.timeout(2400),
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (make test installs it)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class LabData:
    """Where the explorer's cohort and model are, and which profile made them."""

    reports: Path
    data: Path
    profile: str

    @property
    def screenshots(self) -> Path:
        return self.reports / "screenshots"

    @property
    def notebook_seconds(self) -> float:
        """How long the explorer notebook may take in JupyterLab (quick: stability retrains included)."""
        return 300.0 if self.profile == "smoke" else 1200.0


@pytest.fixture(scope="module")
def lab_data(request) -> LabData:
    """The demo's outputs when asked for, else the session's smoke run."""
    reuse = os.environ.get("NBUTILS_REUSE_QUICK")
    if reuse:
        root = Path(reuse).resolve()
        return LabData(root / "reports", root / "data", "quick")
    smoke = request.getfixturevalue("smoke_run")
    if smoke.results["02_train_normative_autoencoder"].status != "ok":
        pytest.fail("the smoke run of notebook 02 failed, so there is no model to explore")
    return LabData(smoke.reports, smoke.data, "smoke")


@pytest.fixture(scope="module")
def lab_params(lab_data) -> dict:
    """The explorer notebook's parameters: the profile and folders of the run that made the data."""
    from nbutils.runner import load_profile, notebook_parameters, resolve_parameters

    source = REPO / "notebooks" / f"{NOTEBOOK}.ipynb"
    return resolve_parameters(
        NOTEBOOK, notebook_parameters(source), load_profile(lab_data.profile, REPO / "notebooks"),
        fixed={"reports_dir": str(lab_data.reports), "data_dir": str(lab_data.data)},
    )


@pytest.fixture(scope="module")
def lab_notebook(lab_params, tmp_path_factory) -> Path:
    """A working copy of the notebooks, the explorer notebook parameterised for the quick run."""
    import papermill

    work = tmp_path_factory.mktemp("lab")
    shutil.copytree(REPO / "notebooks", work / "notebooks")
    source = work / "notebooks" / f"{NOTEBOOK}.ipynb"
    target = work / "notebooks" / f"{NOTEBOOK}_lab.ipynb"
    papermill.execute_notebook(str(source), str(target), parameters=lab_params, prepare_only=True,
                               kernel_name="nbutils")
    return target


@pytest.fixture(scope="module")
def lab_server(lab_notebook) -> Iterator[str]:
    """JupyterLab on a free loopback port; always shut down."""
    port, token = _free_port(), secrets.token_hex(16)
    log = open(lab_notebook.parent / "jupyterlab.log", "w")  # noqa: SIM115 - closed below
    cmd = [
        str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--allow-root",
        "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={lab_notebook.parent}", "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start; see {log.name}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/lab/tree/{lab_notebook.name}?token={token}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def page(lab_server, lab_data):
    """Headless Chromium with the notebook open, all cells run, explorer rendered."""
    from playwright.sync_api import sync_playwright

    global SCREENSHOTS
    SCREENSHOTS = lab_data.screenshots
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, timeout=60_000)
        try:
            pg = browser.new_page(viewport={"width": 1500, "height": 1100})
            pg.set_default_timeout(60_000)
            pg.goto(lab_server)
            pg.wait_for_selector(".jp-Notebook")
            _accept_kernel_dialog(pg)
            _wait_kernel_idle(pg)
            pg.click("#jp-MainMenu .lm-MenuBar-itemLabel:text-is('Run')")
            pg.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
            try:
                pg.wait_for_selector(".nbutils-explorer", timeout=lab_data.notebook_seconds * 1000)
            except Exception:
                pg.screenshot(path=str(SCREENSHOTS / "explorer_not_rendered.png"))
                raise
            _wait_kernel_idle(pg, timeout=lab_data.notebook_seconds)  # the cells after the explorer finish
            pg.locator(".nbutils-explorer").scroll_into_view_if_needed()
            time.sleep(1.0)
            pg.screenshot(path=str(SCREENSHOTS / "jupyterlab_explorer.png"))
            yield pg
        finally:
            browser.close()


def _accept_kernel_dialog(pg) -> None:
    """JupyterLab may ask which kernel to start; the notebook's own (nbutils) is preselected."""
    try:
        pg.locator(".jp-Dialog .jp-mod-accept").click(timeout=8_000)
    except Exception:  # noqa: BLE001 - no dialog this time
        pass
    try:  # the "Jupyter news?" toast would cover part of the screenshots
        pg.locator(".jp-toast-button:text-is('No')").click(timeout=3_000)
    except Exception:  # noqa: BLE001 - no toast this time
        pass


def _wait_kernel_idle(pg, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = pg.locator(".jp-Notebook-ExecutionIndicator").first
        if status.count() and status.get_attribute("data-status") == "idle":
            return
        time.sleep(0.5)
    pytest.fail("kernel did not become idle")


def _view_pixels(pg, name: str) -> np.ndarray:
    """Screenshot of the explorer's slice view as an RGB array (also saved for the README)."""
    from PIL import Image

    view = pg.locator(".nbutils-explorer .nbutils-view").first
    png = view.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _coloured(rgb: np.ndarray) -> int:
    """Overlay pixels: the T1 is grey, the deviation overlay is coloured."""
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 60).sum())


def _slider_value(pg, cls: str) -> float:
    return float(pg.locator(f".{cls} .widget-readout").first.inner_text())


def _nudge_slider(pg, cls: str, steps: int) -> None:
    handle = pg.locator(f".{cls} .noUi-handle").first
    handle.focus()
    key = "ArrowRight" if steps > 0 else "ArrowLeft"
    for _ in range(abs(steps)):
        pg.keyboard.press(key)
    time.sleep(1.5)  # the kernel re-renders the view


def _settle(pg) -> None:
    _wait_kernel_idle(pg)
    time.sleep(1.0)


def test_axial_slider_changes_the_view(page):
    before = _view_pixels(page, "explorer_initial")
    z0 = _slider_value(page, "nbutils-axial-slider")
    _nudge_slider(page, "nbutils-axial-slider", -4)
    _settle(page)
    after = _view_pixels(page, "explorer_axial_moved")
    assert _slider_value(page, "nbutils-axial-slider") == z0 - 4
    assert before.shape == after.shape
    assert np.abs(before - after).mean() > 0.5, "moving the axial slice did not change the rendered view"


def test_raising_threshold_shrinks_overlay(page):
    before = _coloured(_view_pixels(page, "explorer_threshold_low"))
    _nudge_slider(page, "nbutils-z-threshold", 15)
    _settle(page)
    after = _coloured(_view_pixels(page, "explorer_threshold_high"))
    assert before > 0, "no overlay visible at the initial threshold"
    assert after < before, f"overlay did not shrink ({before} -> {after} coloured pixels)"


def test_choosing_a_region_moves_the_slices_to_its_centroid(page, lab_params):
    from nbutils.anatomy import load_atlas, standard_grid
    from nbutils.normative.regional import region_centroids

    sliders = ("nbutils-sagittal-slider", "nbutils-coronal-slider", "nbutils-axial-slider")
    select = page.locator(".nbutils-region-select select").first
    options = [o.strip() for o in select.locator("option").all_inner_texts() if o.strip()]
    assert len(options) >= 2, "the regional profile lists fewer than two regions"
    before = [_slider_value(page, s) for s in sliders]
    target = options[1]  # the explorer starts at the first region; choose another
    select.select_option(label=target)
    _settle(page)
    after = [_slider_value(page, s) for s in sliders]
    from nbutils.runs import open_dataset

    resolution = open_dataset(SimpleNamespace(**lab_params)).resolution
    atlas = load_atlas(lab_params.get("atlas", "neuromorphometrics"), standard_grid(resolution))
    index = int(atlas.labels.set_index("name").loc[target, "index"])
    expected = region_centroids(atlas.data(), [index])[0].tolist()
    assert after == expected, f"slices at {after}, centroid of {target} is {expected}"
    assert after != before
    _view_pixels(page, "explorer_region")


def test_switching_subject_changes_the_regional_table(page):
    table = page.locator(".nbutils-profile-table").first
    before = table.inner_text()
    select = page.locator(".nbutils-subject-select select").first
    current = select.input_value()
    other = next(v for v in select.locator("option").evaluate_all("os => os.map(o => o.value)") if v != current)
    select.select_option(value=other)
    _settle(page)
    after = table.inner_text()
    assert after != before, "switching subject did not change the regional table"
    _view_pixels(page, "explorer_other_subject")
