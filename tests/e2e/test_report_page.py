"""``wbsweep report``'s page in a real browser (Debian's headless Chromium, driven by Selenium),
and its ``--png`` images.

The sweep is a local one whose runs finished through the store's run queue, each
with a history, as trials record them (no training). ``scripts/setup.sh``
installs Chromium and its driver; without them these tests fail under CI and
are skipped elsewhere, saying so.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import local_report_sweep, wbsweep

pytestmark = pytest.mark.slow

RUNS = 6
SETUP_HINT = "run scripts/setup.sh (it installs Debian's chromium and chromium-driver)"


def _missing() -> str | None:
    """What the browser test lacks, if anything."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed"
    for name in ("chromium", "chromedriver"):
        if not shutil.which(name):
            return f"no {name} on PATH"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium that keeps the page's console messages."""
    missing = _missing()
    if missing:
        message = f"{missing}: {SETUP_HINT}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1000", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        options=options, service=Service(executable_path=str(shutil.which("chromedriver")))
    )
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict[str, Any]]]:
    """The real ``wbsweep report --png`` of a sweep of ``RUNS`` finished runs.

    Made once for the module: both tests read the same report (the page, and the images).
    """
    root = tmp_path_factory.mktemp("report")
    store = root / "store.db"
    sweep_id, made = local_report_sweep(store, RUNS)
    page, images = root / "out" / "report.html", root / "out" / "png"
    page.parent.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # as every test runs: in a directory of its own
        result = wbsweep(
            "report", sweep_id, "--store", str(store), "-o", str(page), "--png", str(images)
        )
    assert result.returncode == 0, result.stderr
    assert f"Wrote {page} ({RUNS} runs, {RUNS} with an objective)." in result.stdout
    return page, images, made


def _colours(png: bytes) -> int:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    return len(set(image.getdata()))


def test_the_page_loads_offline_with_every_plot(browser: Any, report: tuple) -> None:
    from selenium.webdriver.common.by import By

    page, _, made = report
    browser.get(page.as_uri())

    def count(selector: str, within: Any = browser) -> int:
        return len(within.find_elements(By.CSS_SELECTOR, selector))

    assert browser.title.startswith("Sweep ")
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    # Nothing was fetched: the page holds everything it shows.
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0

    assert count("#runs tr.run") == RUNS
    best = min(made, key=lambda r: r["objective"])["id"]
    assert [
        e.get_attribute("data-run") for e in browser.find_elements(By.CSS_SELECTOR, "tr.run.best")
    ] == [best]
    assert count("svg.trials circle.trial") == RUNS
    assert count("svg.trials path.best-so-far") == 1
    varied = [
        n
        for n in ("learning_rate", "optim", "width")
        if len({repr(r["params"][n]) for r in made}) > 1
    ]
    axes = browser.find_elements(By.CSS_SELECTOR, "svg.parallel g.pc-axis")
    assert [a.get_attribute("data-param") for a in axes] == [*varied, "objective"]
    assert count("svg.parallel polyline.pc-line") == RUNS
    assert count("#importance tr.importance") == 4  # every param; seed has no score
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.curves")
    assert len(charts) == 2  # the objective and eval_loss
    assert all(count("g.curve", chart) == RUNS for chart in charts)
    for plot in browser.find_elements(By.CSS_SELECTOR, "svg.plot"):
        assert plot.size["width"] > 500 and plot.size["height"] > 100

    # Drawn, not blank: a screenshot of the top of the page has many colours.
    assert _colours(browser.get_screenshot_as_png()) > 100


def test_png_images_are_the_same_plots(report: tuple) -> None:
    _, images, _ = report
    names = sorted(p.name for p in images.iterdir())
    assert names == [
        "curves-eval_loss.png",
        "curves-objective.png",
        "importance.png",
        "parallel.png",
        "trials.png",
    ]
    for name in names:
        data = (images / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), name
        assert _colours(data) > 20, f"{name} looks blank"
