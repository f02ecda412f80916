"""The playground page (book/playground.md, _static/playground/): dmlib's samplers on the exact
Gaussian mixture, rewritten in plain JavaScript, checked in headless Chromium against dmlib.

* The JavaScript hook ``window.dmPlayground.run`` and ``dmlib.samplers.sample`` give the same
  trajectories from the same x_T (float64, so the comparison sees the algorithms, not float32
  rounding): every sampler, several step counts and both time grids, unconditional and with
  classifier-free guidance at several scales, on every preset. DDPM gets the noise that
  ``sample`` drew from its generator, replayed from a generator with the same seed (a test
  without the browser checks that the replay is exactly that noise).
* The page loads nothing from the network, its controls are reachable and usable with the
  keyboard, and the canvases are drawn.
* A test of the test: copies of the script with a planted bug disagree with dmlib.

The page comes from a slim build (seconds, no kernel): the real _config.yml with notebook
execution off, and a table of contents of the playground and the chapters it links to. Set
DMLIB_BOOK_HTML to the html folder of a built book (e.g. _build/html after scripts/book.sh) to
test that one instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dmlib import guidance, noise, samplers, schedules, toy

ROOT = Path(__file__).resolve().parents[1]
PAGE = "book/playground.html"
SCRIPT = ROOT / "_static" / "playground" / "playground.js"
TOL = 1e-4  # max abs difference allowed between the browser's and dmlib's trajectories

# ---------------------------------------------------------------------------------------
# The mixtures of the presets, as the chapters build them

CH6_MEANS = "[[-1.6, -0.6], [-0.45, 0.2], [0.45, 0.2], [1.6, -0.6],\n         [0.0, 1.5], [0.0, -0.85]]"
CH6_STDS = "[0.35, 0.4, 0.4, 0.35, 0.35, 0.4]"


def _preset(name):
    """(mixture, schedule) of a preset of the page, built in Python."""
    if name == "eight":  # Chapters 1-4: GaussianMixture.eight_gaussians() under the linear schedule
        return toy.GaussianMixture.eight_gaussians(), schedules.LinearSchedule()
    if name == "three":  # Chapter 6, Section 6.1
        means = [[-1.6, -0.6], [-0.45, 0.2], [0.45, 0.2], [1.6, -0.6], [0.0, 1.5], [0.0, -0.85]]
        mix = toy.GaussianMixture(means, stds=[0.35, 0.4, 0.4, 0.35, 0.35, 0.4], labels=[0, 0, 1, 1, 2, 2])
        return mix, schedules.CosineSchedule()
    # Chapter 3, Section 3.1, each component a class, under the cosine schedule
    mix = toy.GaussianMixture([[-1.5, -1.5], [1.5, 1.5]], stds=[0.35, 0.35], weights=[0.2, 0.8], labels=[0, 1])
    return mix, schedules.CosineSchedule()


def test_presets_are_the_chapters_mixtures():
    ch6 = (ROOT / "book" / "ch06_guidance.md").read_text(encoding="utf-8")
    assert f"means = {CH6_MEANS}" in ch6 and f"stds = {CH6_STDS}" in ch6, (
        "Chapter 6 changed its mixture: update the 'three' preset of _static/playground/playground.js "
        "and _preset() here")
    assert "labels=[0, 0, 1, 1, 2, 2])\nschedule = schedules.CosineSchedule()" in ch6
    ch3 = (ROOT / "book" / "ch03_scores.md").read_text(encoding="utf-8")
    assert "[[-1.5, -1.5], [1.5, 1.5]]),\n                          stds=torch.tensor([0.35, 0.35])" in ch3
    assert "weights=torch.tensor([0.2, 0.8])" in ch3
    ch4 = (ROOT / "book" / "ch04_samplers.md").read_text(encoding="utf-8")
    assert "mixture = toy.GaussianMixture.eight_gaussians()" in ch4 and "den2d = mixture.denoiser(linear)" in ch4


def test_playground_is_in_the_table_of_contents():
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert "book/playground" in files
    # after Part I, whose chapters it links to
    assert files.index("book/playground") > files.index("book/ch06_guidance")


# ---------------------------------------------------------------------------------------
# The page, built


def _slim_build(out: Path) -> Path:
    import yaml

    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    cfg["execute"]["execute_notebooks"] = "off"  # the chapters are only link targets here
    sphinx = cfg.setdefault("sphinx", {})
    # paths relative to the book's root, which is not the folder of this config file; no nbcache
    # (nothing is executed, and its jupyter-cache of the chapters must not be touched)
    local = {k: str(ROOT / v) for k, v in (sphinx.get("local_extensions") or {}).items() if k != "nbcache"}
    sphinx["local_extensions"] = local
    cfg["bibtex_bibfiles"] = [str(ROOT / p) for p in cfg.get("bibtex_bibfiles", [])]
    chapters = ["ch01_forward_process", "ch02_ddpm", "ch03_scores", "ch04_samplers", "ch06_guidance"]
    toc = {"format": "jb-book", "root": "book/playground",
           "parts": [{"caption": "Part I", "numbered": False,
                      "chapters": [{"file": f"book/{c}"} for c in chapters]}]}
    (out / "_config.yml").write_text(yaml.safe_dump(cfg))
    (out / "_toc.yml").write_text(yaml.safe_dump(toc))
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["DMLIB_STATIC"] = "1"
    jb = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run(
        [str(jb), "build", str(ROOT), "--config", str(out / "_config.yml"), "--toc", str(out / "_toc.yml"),
         "--path-output", str(out), "-n", "--keep-going"],
        capture_output=True, text=True, env=env, timeout=900)
    log = proc.stdout + proc.stderr
    (out / "build.log").write_text(log)
    assert proc.returncode == 0, f"the slim book build failed (exit {proc.returncode}):\n{log[-4000:]}"
    # the chapters are not executed (glue keys are missing); the playground itself must be clean
    warnings = [line for line in log.splitlines() if "WARNING" in line and "playground" in line]
    assert not warnings, "\n".join(warnings)
    return out / "_build" / "html"


@pytest.fixture(scope="session")
def playground_html(tmp_path_factory):
    given = os.environ.get("DMLIB_BOOK_HTML")
    if given:
        html = Path(given).resolve()
        assert (html / PAGE).is_file(), f"DMLIB_BOOK_HTML={given} has no {PAGE}"
        return html
    t0 = time.time()
    html = _slim_build(tmp_path_factory.mktemp("playground_book"))
    print(f"slim book with the playground built in {time.time() - t0:.0f} s")
    return html


def test_page_loads_its_script_and_style_from_the_book(playground_html):
    page = (playground_html / PAGE).read_text(encoding="utf-8")
    for name in ("playground.js", "playground.css"):
        assert (playground_html / "_static" / "playground" / name).is_file(), f"{name} not copied into the build"
        assert re.search(rf'(src|href)="\.\./_static/playground/{name}(\?v=\w+)?"', page), (
            f"the page does not load {name} with a relative URL")
    assert 'id="dm-playground"' in page
    pattern = re.compile(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=[\"'](https?:)?//", re.I)
    assert not pattern.findall(page), "the page loads something from the network"


def test_cross_references_reach_chapters_4_and_6(playground_html):
    page = (playground_html / PAGE).read_text(encoding="utf-8")
    links = set(re.findall(r'href="(ch\d\d_\w+\.html)#([\w-]+)"', page))
    for target in [("ch04_samplers.html", "sec-samplers"), ("ch06_guidance.html", "sec-guidance"),
                   ("ch04_samplers.html", "sec-ddim"), ("ch06_guidance.html", "sec-cfg")]:
        assert target in links, f"no link to {target}: {sorted(links)}"
    for html, anchor in links:
        text = (playground_html / "book" / html).read_text(encoding="utf-8")
        assert f'id="{anchor}"' in text, f"{html} has no anchor {anchor}"


# ---------------------------------------------------------------------------------------
# A real browser, offline (as tests/test_book.py drives it), that records every request


def _browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("headless Chromium is not installed (scripts/ensure_browser.sh installs Debian's "
                    "chromium and chromium-driver where it may)")
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must never fetch a driver
    os.environ.setdefault("SE_AVOID_STATS", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", "--window-size=1280,1800",
                 "--allow-file-access-from-files", "--force-prefers-reduced-motion"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


@pytest.fixture(scope="module")
def browser():
    drv = _browser()
    drv.set_script_timeout(120)
    yield drv
    drv.quit()


def _requests(browser) -> list[str]:
    """URLs the browser asked for since the last call (from its performance log)."""
    import json

    urls = []
    for entry in browser.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


TYPESET = """
const done = arguments[arguments.length - 1];
if (!document.querySelector('script[src*="mathjax" i]')) { done('no MathJax'); }
else (function poll() {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) MathJax.startup.promise.then(() => done('typeset'));
  else setTimeout(poll, 50);
})();
"""


def _open(browser, playground_html):
    browser.get_log("performance")  # forget earlier pages' requests
    browser.get((playground_html / PAGE).as_uri())
    assert browser.execute_async_script(TYPESET) == "typeset"  # the formulas are focusable once typeset
    for _ in range(100):  # the page runs once when it loads
        if browser.execute_script("return document.getElementById('dm-playground').dataset.runs || ''"):
            return
        time.sleep(0.1)
    raise AssertionError("the playground did not draw its first run: " + _status(browser))


def _status(browser) -> str:
    return browser.execute_script("return document.querySelector('[data-pg=status]').textContent.trim()")


@pytest.fixture
def page(browser, playground_html):
    """The browser on the playground page (loaded again if a test went elsewhere)."""
    if browser.current_url != (playground_html / PAGE).as_uri():
        _open(browser, playground_html)
    return browser


def test_page_makes_no_request_outside_the_book(browser, playground_html):
    _open(browser, playground_html)
    urls = _requests(browser)
    assert any(u.endswith("playground.js") or "playground.js?" in u for u in urls), urls
    outside = [u for u in urls if not u.startswith(("file://", "data:", "blob:"))]
    assert not outside, f"requests outside file://: {outside}"
    # and no error from the playground's script in the console
    errors = [e["message"] for e in browser.get_log("browser")
              if e["level"] == "SEVERE" and "_static/playground/" in e["message"]]
    assert not errors, errors


def test_script_is_harmless_on_the_other_pages(browser, playground_html):
    # Jupyter Book loads every script of _static/ on every page: elsewhere it only defines the hook
    browser.get_log("browser")
    browser.get((playground_html / "book" / "ch04_samplers.html").as_uri())
    assert browser.execute_script("return typeof window.dmPlayground.run") == "function"
    assert browser.execute_script("return document.querySelectorAll('canvas').length") == 0
    errors = [e["message"] for e in browser.get_log("browser")
              if e["level"] == "SEVERE" and "_static/playground/" in e["message"]]
    assert not errors, errors


# ---------------------------------------------------------------------------------------
# The JavaScript against dmlib


def _reference(case: dict, dtype=torch.float64):
    """dmlib's trajectory and grid for one case; fills in case["xT"] and (DDPM) case["noises"]."""
    mix, sched = _preset(case["mixture"])
    seed = case.pop("_seed")
    x_T = torch.randn(case.pop("_n"), 2, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    model = mix.denoiser(sched)  # the exact denoiser, predicting eps
    if case["cls"] is not None:
        model = guidance.ClassifierFreeGuidance(model, case["guidance"])
    t_min = 1e-3 if case["spacing"] == "log_snr" else 0.0
    times = samplers.time_grid(case["steps"], spacing=case["spacing"], schedule=sched, t_min=t_min)
    _, traj = samplers.sample(model, x_T, sched, method=case["sampler"], times=times, y=case["cls"],
                              generator=torch.Generator().manual_seed(10_000 + seed),
                              return_trajectory=True)
    case["xT"] = x_T.double().tolist()
    if case["sampler"] == "ddpm":  # the noise sample() drew: a generator in the same state, replayed
        replay = torch.Generator().manual_seed(10_000 + seed)
        case["noises"] = [noise.randn_like(x_T, generator=replay).double().tolist()
                          for _ in range(case["steps"] - 1)]
    return traj.double(), times.double()


METHODS = ["ddpm", "ddim", "euler", "heun", "dpmpp_2m"]
GRIDS = [(1, "uniform"), (8, "uniform"), (30, "log_snr")]
GUIDANCE = [(None, 1.0), (1, 3.5)]  # unconditional; class 1 with w = 3.5


def _cases(mixture):
    cases = []
    for method in METHODS:
        for steps, spacing in GRIDS:
            for cls, w in GUIDANCE:
                cases.append(dict(mixture=mixture, sampler=method, steps=steps, spacing=spacing, cls=cls,
                                  guidance=w, _seed=len(cases), _n=48))
    # the shortcuts of ClassifierFreeGuidance (w = 0: unconditional, w = 1: conditional) and a class 0
    for cls, w in [(0, 0.0), (0, 1.0), (0, 8.0)]:
        cases.append(dict(mixture=mixture, sampler="dpmpp_2m", steps=12, spacing="uniform", cls=cls,
                          guidance=w, _seed=len(cases), _n=48))
    return cases


RUN_ALL = "return arguments[0].map(c => window.dmPlayground.run(c));"


def _compare(browser, cases, dtype=torch.float64):
    """Max abs differences (trajectory, grid) between the browser and dmlib, case by case."""
    refs = [_reference(c, dtype) for c in cases]
    got = browser.execute_script(RUN_ALL, cases)
    out = []
    for c, g, (traj, times) in zip(cases, got, refs):
        js_traj = torch.tensor(g["trajectory"], dtype=torch.float64)
        assert js_traj.shape == traj.shape, (c["sampler"], js_traj.shape, traj.shape)
        assert torch.equal(torch.tensor(g["samples"], dtype=torch.float64), js_traj[-1])
        err = (js_traj - traj).abs().max().item()
        grid_err = (torch.tensor(g["times"], dtype=torch.float64) - times).abs().max().item()
        t_min = 1e-3 if c["spacing"] == "log_snr" else 0.0
        assert g["nfe"] == samplers.nfe(c["sampler"], c["steps"], t_min=t_min), (c["sampler"], g["nfe"])
        out.append((c, err, grid_err, g))
    return out


@pytest.mark.parametrize("mixture", ["eight", "three", "two"])
def test_javascript_samplers_agree_with_dmlib(page, mixture):
    results = _compare(page, _cases(mixture))
    bad = [(c["sampler"], c["steps"], c["spacing"], c["cls"], c["guidance"], f"{err:.2e}", f"{g_err:.1e}")
           for c, err, g_err, _ in results if not (err <= TOL and g_err <= 1e-6)]
    assert not bad, f"{len(bad)} of {len(results)} cases disagree with dmlib (max abs error, grid error): {bad}"
    worst = max(err for _, err, _, _ in results)
    print(f"{mixture}: {len(results)} cases, largest difference from dmlib {worst:.1e}")
    # the uniform grid is dmlib's float32 grid exactly
    assert all(g_err == 0.0 for c, _, g_err, _ in results if c["spacing"] == "uniform")
    # the mixture the page used is the chapters' one, under the chapter's schedule
    mix, sched = _preset(mixture)
    used = results[0][3]["mixture"]
    torch.testing.assert_close(torch.tensor(used["means"], dtype=torch.float64), mix.means, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.tensor(used["covs"], dtype=torch.float64), mix.covs, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.tensor(used["weights"], dtype=torch.float64), mix.weights, rtol=0, atol=1e-12)
    assert used["labels"] == mix.labels.tolist() and used["schedule"]["name"] == sched.name


def test_javascript_agrees_with_dmlib_in_float32(page):
    # the chapters sample in float32; dmlib's float32 arithmetic stays within TOL of the page's float64
    cases = [dict(mixture="eight", sampler=m, steps=25, spacing="uniform", cls=None, guidance=1.0,
                  _seed=100 + i, _n=64) for i, m in enumerate(METHODS)]
    results = _compare(page, cases, dtype=torch.float32)
    errs = {c["sampler"]: err for c, err, _, _ in results}
    assert max(errs.values()) <= TOL, errs


def test_replayed_noise_is_the_noise_sample_drew():
    # DDPM written out with dmlib's public posterior and the replayed noise is sample() itself
    from dmlib.diffusion import posterior

    mix, sched = _preset("eight")
    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    model, n = mix.denoiser(sched), 9
    x_ref = samplers.sample(model, x_T, sched, method="ddpm", n_steps=n, generator=torch.Generator().manual_seed(7))
    replay = torch.Generator().manual_seed(7)
    noises = [noise.randn_like(x_T, generator=replay) for _ in range(n - 1)]
    grid, x = samplers.time_grid(n).tolist(), x_T
    for i, (t, s) in enumerate(zip(grid, grid[1:])):
        x0 = samplers.predict(model, x, t, sched, "x0")
        if i < n - 1:  # a draw from q(x_s | x_t, x0_hat) with the replayed noise
            mean, var = posterior(x0, x, s, t, sched)
            x = mean + var.sqrt() * noises[i]
        else:  # the last step adds no noise
            x = samplers.ddim_step(x, x0, t, s, sched)
    assert torch.equal(x, x_ref)
    # and the check can fail: other noise gives other samples
    assert not torch.equal(x_ref, samplers.sample(model, x_T, sched, method="ddpm", n_steps=n,
                                                  generator=torch.Generator().manual_seed(8)))


# ---------------------------------------------------------------------------------------
# The page: keyboard, drawing, text alternatives

CANVAS_STATS = """
const c = document.querySelector('[data-pg=' + arguments[0] + ']');
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let inked = 0, dots = 0; const colours = new Set();
for (let i = 0; i < d.length; i += 4) {
  const [r, g, b] = [d[i], d[i + 1], d[i + 2]];
  if (r + g + b < 3 * 245) inked++;
  if (r > 150 && g > 60 && g < 180 && b < 60) dots++;   // vermillion or orange: the samples
  colours.add((r << 16) | (g << 8) | b);
}
return {inked: inked / (d.length / 4), dots: dots, colours: colours.size, url: c.toDataURL().length,
        hash: c.toDataURL().slice(-200)};
"""


def _canvas(browser, name):
    return browser.execute_script(CANVAS_STATS, name)


def test_canvases_show_a_density_and_samples(page):
    page.execute_script("""
        const set = (k, v) => { const e = document.querySelector('[data-pg=' + k + ']');
                                 e.value = v; e.dispatchEvent(new Event('change')); };
        set('mixture', 'three'); set('cls', '2'); set('sampler', 'heun'); set('steps', '15');
        document.querySelector('[data-pg=run]').click();""")
    for name in ("canvas-samples", "canvas-paths"):
        stats = _canvas(page, name)
        assert stats["inked"] > 0.1 and stats["colours"] > 200, (name, stats)  # a heat map, not a blank
        assert stats["dots"] > 100, (name, stats)  # the samples are drawn on it
        label = page.execute_script(f"return document.querySelector('[data-pg={name}]').getAttribute('aria-label')")
        assert "density" in label and "three-class mixture guided towards class 2" in label, label
        assert page.execute_script(f"return document.querySelector('[data-pg={name}]').getAttribute('role')") == "img"
    assert "Heun" in page.find_element("css selector", "[data-pg=canvas-samples]").get_attribute("aria-label")
    assert _status(page).startswith("Heun (probability-flow ODE), 15 steps (29 evaluations of the guided model, "
                                    "58 of the exact denoiser)"), _status(page)


FOCUSABLE_BEFORE = """
const root = document.getElementById('dm-playground');
const before = Array.from(document.querySelectorAll('main a[href], main [tabindex="0"]'))
  .filter(a => a.compareDocumentPosition(root) & Node.DOCUMENT_POSITION_FOLLOWING);
before[before.length - 1].focus();   // a link or a formula of the text above the playground
return before.length;
"""
ACTIVE = "const a = document.activeElement; return a ? (a.dataset.pg || a.tagName) : null;"


def test_keyboard_alone_runs_the_playground(browser, playground_html):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    _open(browser, playground_html)
    keys = ActionChains(browser)
    assert browser.execute_script(FOCUSABLE_BEFORE) > 0
    # Tab from the last stop of the text before the playground walks through its controls in order
    visited = []
    for _ in range(12):
        keys.send_keys(Keys.TAB).perform()
        visited.append(browser.execute_script(ACTIVE))
        if visited[-1] == "run":
            break
    # the guidance scale is disabled (and skipped) while no class is chosen, as for the eight Gaussians
    assert visited == ["mixture", "schedule", "sampler", "steps", "spacing", "cls", "n", "seed", "run"], visited
    run = browser.switch_to.active_element
    assert browser.execute_script("return arguments[0].matches(':focus-visible')", run)
    style = browser.execute_script(
        "const s = getComputedStyle(arguments[0]); return [s.outlineStyle, s.outlineWidth]", run)
    assert style[0] != "none" and float(style[1].rstrip("px")) >= 2, f"no visible focus ring on Run: {style}"

    # choose another sampler and seed with the keyboard, then press Enter on Run
    before_status, before_left = _status(browser), _canvas(browser, "canvas-samples")["hash"]
    runs = lambda: int(browser.execute_script("return document.getElementById('dm-playground').dataset.runs"))  # noqa: E731
    n_runs = runs()
    keys = ActionChains(browser)
    keys.key_down(Keys.SHIFT).send_keys(Keys.TAB * 6).key_up(Keys.SHIFT).perform()  # back to the sampler
    assert browser.execute_script(ACTIVE) == "sampler"
    ActionChains(browser).send_keys(Keys.END).perform()  # the last option, DPM-Solver++(2M)
    assert browser.execute_script("return document.querySelector('[data-pg=sampler]').value") == "dpmpp_2m"
    ActionChains(browser).send_keys(Keys.TAB * 5).perform()
    assert browser.execute_script(ACTIVE) == "seed"
    ActionChains(browser).send_keys(Keys.BACKSPACE * 3, "7", Keys.TAB).perform()
    assert browser.execute_script(ACTIVE) == "run"
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    assert runs() == n_runs + 1
    status = _status(browser)
    assert status != before_status and status.startswith("DPM-Solver++(2M), 10 steps"), status
    assert _canvas(browser, "canvas-samples")["hash"] != before_left, "Enter on Run did not redraw the samples"
    ActionChains(browser).send_keys(Keys.SPACE).perform()  # Space presses a button too
    assert runs() == n_runs + 2

    # past the canvases, the step slider moves with the arrow keys and redraws the left panel
    for expected in ("canvas-samples", "canvas-paths", "step"):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        assert browser.execute_script(ACTIVE) == expected
    left = _canvas(browser, "canvas-samples")["hash"]
    ActionChains(browser).send_keys(Keys.HOME).perform()
    shown = browser.execute_script("return document.querySelector('[data-pg=step-out]').textContent")
    assert shown.startswith("step 0 of 10, t = 1.000"), shown
    assert _canvas(browser, "canvas-samples")["hash"] != left
    label = browser.find_element("css selector", "[data-pg=canvas-samples]").get_attribute("aria-label")
    assert "at t = 1.000" in label and "after 0 of its 10 steps" in label, label


# ---------------------------------------------------------------------------------------
# A test of the test: planted bugs in copies of the script are caught by the comparison

PLANTED = {
    "DDIM: sigma_t instead of sigma_s in front of eps_hat": (
        "next[k] = as[0] * x0[k] + as[1] * epsHat;", "next[k] = as[0] * x0[k] + at[1] * epsHat;",
        dict(mixture="eight", sampler="ddim", steps=8)),
    "DPM-Solver++(2M): extrapolation weight 1/r instead of 1/(2r)": (
        "c0 = 1 + 1 / (2 * r);", "c0 = 1 + 1 / r;", dict(mixture="three", sampler="dpmpp_2m", steps=8)),
    "DDPM: the posterior variance where its square root belongs": (
        "const std = Math.sqrt(Math.max(as[1] * as[1] * d, 0.0));", "const std = Math.max(as[1] * as[1] * d, 0.0);",
        dict(mixture="eight", sampler="ddpm", steps=8)),
    "Heun: the two slopes weighted 0.55 instead of 1/2": (
        "next[k] = x[k] + dt * 0.5 * (u[k] + u2[k]);", "next[k] = x[k] + dt * 0.55 * (u[k] + u2[k]);",
        dict(mixture="eight", sampler="heun", steps=8)),
    "CFG: the guidance term added to the conditional output": (
        "out[i] = uncond[i] + w * (cond[i] - uncond[i]);", "out[i] = cond[i] + w * (cond[i] - uncond[i]);",
        dict(mixture="three", sampler="ddim", steps=8, cls=1, guidance=3.0)),
    "posterior mean: responsibilities without the mixture weights": (
        "? mix.logWeights[m] + lp[m] : -Infinity;", "? lp[m] : -Infinity;",
        dict(mixture="two", sampler="euler", steps=8)),
    "linear schedule: beta_max = 19": (
        "linearSchedule(betaMin = 0.1, betaMax = 20.0)", "linearSchedule(betaMin = 0.1, betaMax = 19.0)",
        dict(mixture="eight", sampler="ddim", steps=8)),
}


@pytest.mark.parametrize("bug", list(PLANTED))
def test_comparison_catches_a_planted_bug(browser, tmp_path, bug):
    old, new, case = PLANTED[bug]
    source = SCRIPT.read_text(encoding="utf-8")
    assert source.count(old) == 1, f"the line to plant the bug in is gone from playground.js: {old}"
    (tmp_path / "playground.js").write_text(source.replace(old, new), encoding="utf-8")
    (tmp_path / "index.html").write_text('<!DOCTYPE html><html><head><script src="playground.js"></script>'
                                         "</head><body></body></html>")
    browser.get((tmp_path / "index.html").as_uri())
    full = dict(dict(spacing="uniform", cls=None, guidance=1.0, _seed=3, _n=48), **case)
    ((_, err, _, _),) = _compare(browser, [full])
    print(f"{bug}: max abs difference from dmlib {err:.2e}")
    assert err > 100 * TOL, f"the planted bug ({bug}) changes the samples by only {err:.1e}"
