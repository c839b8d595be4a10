"""The HTML report: its files, escaping and privacy, and the page driven in a real browser.

The browser tests run headless Chromium (Debian's ``chromium`` and
``chromium-driver``, see scripts/system-packages.txt) through Selenium over
reports of synthetic feet, opened from ``file://`` with name resolution
disabled, so nothing can load from a network. Screenshots go to
``tests/artifacts/`` (ignored by git).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orthocad import frame, insole, measure, pipeline, prescribe, report, scan, surface, synthetic
from orthocad.enums import Side, Units
from orthocad.errors import InputError
from orthocad.quality import Check, Quality
from orthocad.signoff import file_sha256

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
HOSTILE = "<script>alert('x')</script> & \"quoted\" <img src=x onerror=alert(1)>"


@cache
def foot_report(side: Side) -> report.FootReport:
    """A synthetic foot through the pipeline; the left one with a clinician's override."""
    synth = synthetic.synth_scan(synthetic.FootShape(side=side), n_points=60_000, seed=3)
    cleaned = pipeline.split_and_clean(scan.from_points(synth.points, units=Units.MM))
    # A scan file's name may carry a patient's name: the report must never show it.
    cleaned = dataclasses.replace(cleaned[0], source=Path(f"/clinic/jane_doe_{side.value}.ply"))
    foot = frame.canonical(cleaned, side=side)
    plantar = surface.plantar(foot)
    m = measure.measure(foot)
    overrides = {"rearfoot_post_deg": 3.0} if side is Side.LEFT else None
    rx = prescribe.prescribe(m, overrides=overrides)
    built = insole.build_insole(foot, rx, plantar=plantar, measurements=m)
    return report.FootReport(foot, plantar, m, rx, built)


def validation(side: Side, *, fail: bool = False) -> dict:
    """A validation result as export's ``to_dict()`` gives it (the left as a mapping of checks)."""
    checks = [
        {"name": "watertight", "passed": True, "value": 1.0, "limit": 1.0, "unit": "",
         "message": "closed, consistent winding"},
        {"name": "min_thickness", "passed": not fail, "value": 2.1 if fail else 3.05,
         "limit": 2.9, "unit": "mm", "message": "thinner than the shell" if fail else "ok"},
    ]
    skipped = {"gap_map": "no plantar surface given"}
    if side is Side.LEFT:
        return {"passed": not fail, "checks": {c.pop("name"): c for c in checks}}
    return {"passed": not fail, "checks": checks, "skipped": skipped}


def with_files(fr: report.FootReport, folder: Path, case_id: str, **changes
               ) -> report.FootReport:
    """The foot's measurements and prescription JSON and its STL, as ``run`` writes them."""
    side = fr.side.value
    folder.mkdir(parents=True, exist_ok=True)
    files = (folder / f"{case_id}_{side}_measurements.json",
             folder / f"{case_id}_{side}_prescription.json", folder / f"{case_id}_{side}.stl")
    files[0].write_text(json.dumps(fr.measurements.to_dict(), indent=2))
    files[1].write_text(json.dumps(fr.prescription.to_dict(), indent=2))
    fr.insole.mesh.export(files[2])
    return dataclasses.replace(fr, files=files, validation=validation(fr.side), **changes)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, report.CaseReport]:
    out = tmp_path_factory.mktemp("pair")
    feet = tuple(with_files(foot_report(side), out / side.value, "P1")
                 for side in (Side.RIGHT, Side.LEFT))
    case_json = out / "case.json"
    case_json.write_text("{}")
    case = report.CaseReport("P1", feet, files=(case_json,))
    report.write_report(case, out)
    return out, case


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> tuple[Path, report.CaseReport]:
    out = tmp_path_factory.mktemp("single")
    fr = with_files(foot_report(Side.RIGHT), out / "right", "S1")
    case = report.CaseReport("S1", (fr,))
    report.write_report(case, out)
    return out, case


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> tuple[Path, report.CaseReport]:
    """The bundled plantar scan (a triangle mesh): the 3D view shows its triangles."""
    out = tmp_path_factory.mktemp("real")
    [foot] = pipeline.load_feet(ROOT / "scans" / "techmed3d_plantar_right.obj")
    plantar, m = surface.plantar(foot), measure.measure(foot)
    rx = prescribe.prescribe(m)
    built = insole.build_insole(foot, rx, plantar=plantar, measurements=m)
    fr = with_files(report.FootReport(foot, plantar, m, rx, built), out / "right", "T1")
    case = report.CaseReport("T1", (fr,))
    report.write_report(case, out)
    return out, case


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, report.CaseReport]:
    """Text that would be markup if not escaped, in the case id and a warning."""
    out = tmp_path_factory.mktemp("hostile")
    case = report.CaseReport(HOSTILE, (foot_report(Side.RIGHT),), warnings=(HOSTILE,))
    report.write_report(case, out)
    return out, case


# --- files -------------------------------------------------------------------------------------


def test_pair_writes_the_page_its_assets_and_the_summary(pair):
    out, _ = pair
    assets = {p.name for p in (out / report.ASSETS_DIR).iterdir()}
    plots = {f"{k}_{s}.png" for k in ("plantar", "sagittal", "heel", "thickness")
             for s in ("left", "right")}
    assert assets == plots | {"scene_left.js", "scene_right.js", "viewer.js", "report.css"}
    assert (out / report.REPORT_NAME).is_file() and (out / report.SUMMARY_NAME).is_file()
    assert not list(out.glob(".report-*")), "the temporary folder is left behind"


def test_summary_is_one_a4_page_with_content(pair):
    image = Image.open(pair[0] / report.SUMMARY_NAME)
    assert image.format == "PNG"
    assert image.size == (827, 1169)  # A4 at 100 dpi
    assert np.asarray(image.convert("L"), dtype=float).std() > 20


def test_files_are_listed_with_size_and_sha256(pair):
    out, case = pair
    page = (out / report.REPORT_NAME).read_text("utf-8")
    for path in [*case.feet[0].files, *case.feet[1].files, *case.files]:
        relative = path.relative_to(out).as_posix()
        size = f"{path.stat().st_size:,}"
        sha = file_sha256(path)
        assert re.search(rf"{re.escape(relative)}</td><td class='num'>{size}</td>"
                         rf"<td class='hash'>{sha}</td>", page), relative


def test_a_new_report_replaces_the_old_one_whole(tmp_path):
    pair_case = report.CaseReport("R1", (foot_report(Side.RIGHT), foot_report(Side.LEFT)))
    report.write_report(pair_case, tmp_path)
    report.write_report(report.CaseReport("R1", (foot_report(Side.RIGHT),)), tmp_path)
    assets = {p.name for p in (tmp_path / report.ASSETS_DIR).iterdir()}
    assert "scene_left.js" not in assets and "scene_right.js" in assets
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [report.REPORT_NAME, report.ASSETS_DIR, report.SUMMARY_NAME])


def test_a_failure_leaves_no_partial_report(tmp_path, monkeypatch):
    def broken(case, path):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "_write_summary", broken)
    with pytest.raises(RuntimeError):
        report.write_report(report.CaseReport("F1", (foot_report(Side.RIGHT),)), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_sides_must_agree_and_not_repeat():
    right, left = foot_report(Side.RIGHT), foot_report(Side.LEFT)
    with pytest.raises(InputError, match="different sides"):
        dataclasses.replace(right, prescription=left.prescription)
    with pytest.raises(InputError, match="one foot, or a left and a right"):
        report.CaseReport("D1", (right, right))
    with pytest.raises(InputError):
        report.CaseReport("D1", ())
    assert [f.side for f in report.CaseReport("D1", (right, left)).feet] == [Side.LEFT, Side.RIGHT]


# --- content, escaping, privacy ---------------------------------------------------------------


def test_text_is_escaped(hostile):
    page = (hostile[0] / report.REPORT_NAME).read_text("utf-8")
    assert "<script>alert" not in page and "<img src=x" not in page
    escaped = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quoted&quot;"
    assert page.count(escaped) >= 3  # the title, the heading and the warning


def test_no_patient_name_in_any_output(pair):
    out, _ = pair
    for path in out.rglob("*"):
        if path.is_file():
            assert b"jane_doe" not in path.read_bytes(), path


def test_warnings_come_first_and_name_each_problem(tmp_path):
    fr = foot_report(Side.RIGHT)
    failing = Check("holes", False, 14.0, 10.0, "mm", "a 14 mm hole in the arch region")
    quality = Quality(checks=(failing,), forced=True)
    why = "the heel surface reaches 20 mm on its lower side"
    unclassified = dataclasses.replace(fr.measurements.classification, rearfoot=None,
                                       rearfoot_driver=None, rearfoot_reason="angle missing")
    measured = dataclasses.replace(fr.measurements, quality=quality, rearfoot_angle_deg=None,
                                   missing={"rearfoot_angle_deg": why},
                                   classification=unclassified)
    fr = dataclasses.replace(fr, measurements=measured,
                             validation=validation(Side.RIGHT, fail=True))
    case = report.CaseReport("W1", (fr,), warnings=("lengths differ by 12 mm",))
    assert report.case_warnings(case) == [
        "lengths differ by 12 mm",
        "right scan: the quality gate processed anyway (--force): a 14 mm hole in the arch region",
        "right insole: validation check min_thickness failed: thinner than the shell",
    ]
    page = report.write_report(case, tmp_path).read_text("utf-8")
    assert page.index('id="warnings"') < page.index("id='scans'") < page.index("id='measurements'")
    assert "Warnings (3)" in page and "FAILED, forced" in page
    assert (f'<td class="num" title="{why}" data-field="rearfoot_angle_deg" data-side="right">'
            '<span class="value">—</span>') in page


def test_overrides_and_drivers_are_marked(pair):
    page = (pair[0] / report.REPORT_NAME).read_text("utf-8")
    left = page[page.index("id='prescription-left'"):page.index("id='prescription-right'")]
    right = page[page.index("id='prescription-right'"):]
    assert re.search(r"<tr class=override data-field='rearfoot_post_deg'>.*?\+3\.0°.*?"
                     "clinician override", left)
    assert "class=override" not in right[:right.index("</table>")]
    driver = foot_report(Side.RIGHT).measurements.classification.arch_driver
    assert f'class="num driver" data-field="{driver}" data-side="right"' in page


def test_validation_checks_are_shown_from_either_form(pair):
    page = (pair[0] / report.REPORT_NAME).read_text("utf-8")
    for side in ("left", "right"):
        table = page[page.index(f"id='validation-{side}'"):]
        table = table[:table.index("</table>")]
        assert "<td>watertight</td>" in table and "3.05 mm" in table and "2.9 mm" in table
        assert ("skipped</td><td></td><td></td><td>no plantar surface given" in table) == (
            side == "right")


# --- the 3D scenes -------------------------------------------------------------------------------


def scene(out: Path, side: str) -> dict:
    text = (out / report.ASSETS_DIR / f"scene_{side}.js").read_text()
    return json.loads(text.split(" = ", 2)[-1].rstrip(";\n"))


def decoded(mesh: dict) -> np.ndarray:
    q = np.frombuffer(base64.b64decode(mesh["positions"]), "<u2").reshape(-1, 3)
    return np.asarray(mesh["lo"]) + q / 65535.0 * np.asarray(mesh["span"])


def test_scene_holds_the_insole_and_the_scan_as_worn(pair):
    out, case = pair
    for fr in case.feet:
        data = scene(out, fr.side.value)
        scan_mesh, insole_mesh = data["meshes"]
        faces = np.frombuffer(base64.b64decode(insole_mesh["indices"]), "<u2").reshape(-1, 3)
        vertices = decoded(insole_mesh)
        # Small enough to keep: the view shows the insole's own triangles, within quantisation.
        assert len(faces) == len(fr.insole.mesh.faces)
        np.testing.assert_allclose(np.sort(vertices, axis=0),
                                   np.sort(fr.insole.mesh.vertices, axis=0), atol=0.01)
        points = decoded(scan_mesh)
        assert scan_mesh["kind"] == "points"
        assert len(points) == min(report.VIEW_POINTS, len(fr.foot.points_mm))
        worn = fr.foot.to_output(fr.foot.points_mm) + [0, 0, fr.prescription.shell_thickness_mm]
        np.testing.assert_allclose(points.min(axis=0), worn.min(axis=0), atol=1.0)
        np.testing.assert_allclose(points.max(axis=0), worn.max(axis=0), atol=1.0)


def test_scene_of_a_mesh_scan_holds_its_triangles(real):
    out, case = real
    [fr] = case.feet
    scan_mesh = scene(out, "right")["meshes"][0]
    assert scan_mesh["kind"] == "mesh"
    vertices = decoded(scan_mesh)
    faces = np.frombuffer(base64.b64decode(scan_mesh["indices"]), "<u2").reshape(-1, 3)
    assert len(faces) == len(fr.foot.faces) <= report.VIEW_FACES
    worn = fr.foot.to_output(fr.foot.points_mm) + [0, 0, fr.prescription.shell_thickness_mm]
    # The same triangles (corners within quantisation), wound the same way.
    expected = worn[fr.foot.faces]
    np.testing.assert_allclose(vertices[faces], expected, atol=0.01)


def test_view_mesh_decimates_a_sphere_and_keeps_its_shape():
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=6, radius=100.0)  # 81,920 triangles
    vertices, faces = report.view_mesh(sphere.vertices, sphere.faces, max_faces=10_000)
    assert 5_000 <= len(faces) <= 10_000
    radius = np.linalg.norm(vertices, axis=1)
    assert np.abs(radius - 100.0).max() < 2.0
    small = trimesh.Trimesh(vertices, faces, process=False)
    assert small.area == pytest.approx(sphere.area, rel=0.03)
    # Winding kept: the normals still point out.
    assert (np.einsum("ij,ij->i", small.face_normals, small.triangles_center) > 0).mean() > 0.98


def test_view_mesh_keeps_a_small_mesh():
    import trimesh

    box = trimesh.creation.box((10, 20, 30))
    vertices, faces = report.view_mesh(box.vertices, box.faces)
    np.testing.assert_array_equal(vertices[faces], box.vertices[box.faces])


# --- in a real browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM.is_file() and CHROMEDRIVER.is_file(), (
        "the browser tests need Debian's chromium and chromium-driver: scripts/system-deps.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1300,1000",
                     "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
                     "--host-resolver-rules=MAP * ~NOTFOUND"):  # no network: no name resolves
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def load(driver, out: Path) -> list[dict]:
    """Open the report from file:// and return the browser's console entries while loading."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.set_window_size(1300, 1000)
    driver.get((out / report.REPORT_NAME).as_uri())
    driver.execute_script("return document.readyState")
    return driver.get_log("browser")


def canvas_pixels(driver, canvas) -> np.ndarray:
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    return np.asarray(Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("L"), float)


def save_screenshot(driver, name: str) -> Path:
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1300, min(height + 50, 16000))
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    print(f"report screenshot: {path}")
    return path


@pytest.mark.parametrize("which", ["single", "pair", "real"])
def test_report_in_chromium(browser, request, which):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By

    out, case = request.getfixturevalue(which)
    logs = load(browser, out)
    assert [e for e in logs if e["level"] == "SEVERE"] == []
    # Everything came from the report's folder.
    urls = browser.execute_script(
        "return Array.from(document.querySelectorAll('[src], link[href]'))"
        ".map(e => e.src || e.href)")
    assert urls and all(url.startswith(out.as_uri() + "/") for url in urls), urls
    # Every plot has loaded.
    images = browser.find_elements(By.TAG_NAME, "img")
    assert len(images) == 4 * len(case.feet)
    for image in images:
        assert browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", image) > 0
    # Each 3D view draws something and follows a drag and the wheel.
    canvases = browser.find_elements(By.CSS_SELECTOR, "canvas.view3d")
    assert len(canvases) == len(case.feet)
    for canvas in canvases:
        before = canvas_pixels(browser, canvas)
        assert before.std() > 8.0, "the 3D view is blank"
        ActionChains(browser).move_to_element(canvas).click_and_hold().move_by_offset(120, 40) \
            .release().perform()
        dragged = canvas_pixels(browser, canvas)
        assert np.mean(np.abs(dragged - before) > 10) > 0.02, "a drag did not turn the view"
        ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(canvas), 0, 400) \
            .perform()
        zoomed = canvas_pixels(browser, canvas)
        assert np.mean(np.abs(zoomed - dragged) > 10) > 0.02, "the wheel did not zoom"
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    save_screenshot(browser, f"report_{which}.png")


@pytest.mark.parametrize("which", ["single", "pair", "real"])
def test_measurement_table_shows_the_json_values(browser, request, which):
    from selenium.webdriver.common.by import By

    out, case = request.getfixturevalue(which)
    load(browser, out)
    for fr in case.feet:
        side = fr.side.value
        [path] = [p for p in fr.files if p.name.endswith("_measurements.json")]
        values = json.loads(path.read_text())
        compared = 0
        for name in measure.SPEC_FIELDS + measure.EXTRA_FIELDS:
            cell = browser.find_element(
                By.CSS_SELECTOR, f'td[data-field="{name}"][data-side="{side}"] .value')
            text = cell.text
            if values[name] is None:
                assert text == "—", name
                continue
            decimals = len(text.partition(".")[2])
            assert abs(float(text) - values[name]) <= 0.5 * 10.0**-decimals + 1e-9, (name, text)
            compared += 1
        assert compared >= 10
        for key in ("arch", "rearfoot"):
            shown = browser.find_element(
                By.CSS_SELECTOR, f'[data-class="{key}"][data-side="{side}"]').text
            assert shown == (values["classification"][key] or "not classified")


def test_escaped_text_shows_literally_and_runs_nothing(browser, hostile):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    out, _ = hostile
    logs = load(browser, out)
    assert [e for e in logs if e["level"] == "SEVERE"] == []
    assert browser.find_element(By.TAG_NAME, "h1").text == f"Case {HOSTILE}"
    assert HOSTILE in browser.find_element(By.ID, "warnings").text
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018
