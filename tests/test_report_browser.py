"""The report page in a real browser: headless Chromium opens the file:// page with no network
and draws the five pictures.

Chromium comes from the OS packages; .ci/run installs it when it is missing, so this test
fails (it never skips) where it is absent. Its networking is cut (every host name resolves to
nothing, every request goes to a closed proxy port): the page must draw from what it holds.
The DOM the browser built is read back (--dump-dom), and a screenshot (--screenshot) is
decoded to find each picture's own colours, in page order: pixels, not just markup.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from collections import defaultdict
from pathlib import Path

import pytest

from pipeline.entry import run_stage
from pipeline.ops import cli
from pipeline.report.figures import (
    FIGURES,
    LISTING_COLOURS,
    MISSING_COLOURS,
    PENDING_COLOUR,
    SHARE_COLOURS,
    VOLUME_COLOURS,
)
from pipeline.stages import report
from tests.test_report_page import build_project

BROWSERS = ("chromium", "chromium-browser")
OFFLINE = (
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=http://127.0.0.1:9",  # the discard port: nothing listens there
    "--proxy-bypass-list=<-loopback>",
)
WIDTH = 1100
TIMEOUT_S = 120  # a bound on a hung browser, not a timing assertion
# Each picture's own colours (figures.py gives no two pictures the same): found in the
# screenshot, they show that picture was painted, and where.
AVAILABLE_LINE = "#1f77b4"
SIGNATURES = {
    "available-per-day": [AVAILABLE_LINE],
    "listings-per-month": list(LISTING_COLOURS.values()),
    "missing-per-day": [MISSING_COLOURS["missing"]],
    "volume-per-day": list(VOLUME_COLOURS.values()),
    "availability-heatmap": [SHARE_COLOURS[0.0], SHARE_COLOURS[1.0]],
}
MIN_PIXELS = 40  # more than a legend swatch of the colour alone


def chromium() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        pytest.fail(
            "chromium is not installed: `apt-get install chromium` (.ci/run installs it); "
            "the report page must be checked in a real browser"
        )
    return found


def browse(page: Path, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    command = [
        chromium(),
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={home / 'profile'}",
        *OFFLINE,
        *args,
        page.as_uri(),
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env={**os.environ, "HOME": str(home)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.fixture
def page(tmp_path, monkeypatch, capsys) -> Path:
    monkeypatch.chdir(tmp_path)
    build_project(tmp_path)
    assert run_stage("report", report.run) == 0
    assert cli.main(["report", "--out", "reports"]) == 0
    capsys.readouterr()
    return tmp_path / "reports/index.html"


def test_chromium_builds_the_five_pictures_from_the_page_offline(page, tmp_path):
    dom = browse(page, "--dump-dom", home=tmp_path).stdout
    sections = re.findall(r'<section id="([^"]+)">(.*?)</section>', dom, re.S)
    assert [anchor for anchor, _ in sections] == [figure.anchor for figure in FIGURES]
    assert len(sections) == 5
    for anchor, body in sections:
        (svg,) = re.findall(r"<svg[^>]*>.*?</svg>", body, re.S)
        marks = re.findall(r'<g class="mark-(?:rect|line) role-mark', svg)
        assert marks, anchor
        assert len(re.findall(r"<path ", svg)) > 10, anchor
    assert "<script" not in dom


def test_chromium_paints_each_picture_in_its_colours_in_page_order(page, tmp_path):
    height = page_height(page.read_text(encoding="utf-8"))
    shot = tmp_path / "page.png"
    browse(
        page,
        f"--window-size={WIDTH},{height}",
        "--force-device-scale-factor=1",
        f"--screenshot={shot}",
        home=tmp_path,
    )
    counts = colour_rows(shot, {c for colours in SIGNATURES.values() for c in colours})
    tops = {}
    for anchor, colours in SIGNATURES.items():
        for colour in colours:
            rows = counts[colour]
            assert sum(rows.values()) >= MIN_PIXELS, f"{anchor}: {colour} not painted"
        tops[anchor] = min(min(counts[c]) for c in colours)
    # Each picture's colours begin below the previous picture's: five pictures, in order.
    assert list(SIGNATURES) == [figure.anchor for figure in FIGURES]
    assert sorted(tops, key=tops.__getitem__) == list(SIGNATURES)


def test_no_two_pictures_share_a_colour():
    colours = [
        AVAILABLE_LINE,
        *LISTING_COLOURS.values(),
        *MISSING_COLOURS.values(),
        *VOLUME_COLOURS.values(),
        *SHARE_COLOURS.values(),
        PENDING_COLOUR,
    ]
    assert len(set(colours)) == len(colours)


def page_height(text: str) -> int:
    """Enough pixels for the whole page: its pictures, plus headings and captions."""
    heights = [int(h) for h in re.findall(r'<svg[^>]* height="(\d+)"', text)]
    return sum(heights) + 200 * (len(heights) + 1)


# --- the screenshot's pixels ----------------------------------------------------------------
# Decoded here, with the standard library: the test environment has no image library, and a
# screenshot needs only the 8-bit RGB(A) subset of PNG.


def colour_rows(png: Path, colours: set[str]) -> dict[str, dict[int, int]]:
    """For each colour (#rrggbb), how many pixels of exactly it each image row holds."""
    wanted = {bytes.fromhex(colour[1:]): colour for colour in colours}
    found: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for y, pixels in enumerate(png_rows(png.read_bytes())):
        for pixel in pixels:
            if pixel in wanted:
                found[wanted[pixel]][y] += 1
    return found


def png_rows(data: bytes) -> list[list[bytes]]:
    """Each row of an 8-bit RGB or RGBA PNG as its pixels' RGB bytes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    chunks, position = {}, 8
    idat = b""
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IDAT":
            idat += body
        else:
            chunks[kind] = body
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, interlace) == (8, 0) and colour_type in (2, 6), "an unexpected PNG flavour"
    step = 3 if colour_type == 2 else 4
    stride = width * step
    raw = zlib.decompress(idat)
    previous = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        line = unfilter(raw[start], bytearray(raw[start + 1 : start + 1 + stride]), previous, step)
        rows.append([bytes(line[x : x + 3]) for x in range(0, stride, step)])
        previous = line
    return rows


def unfilter(kind: int, line: bytearray, previous: bytearray, step: int) -> bytearray:
    """Undo one row's PNG filter (None, Sub, Up, Average, Paeth)."""
    if kind == 0:
        return line
    if kind == 2:
        return bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
    for i in range(len(line)):
        left = line[i - step] if i >= step else 0
        up = previous[i]
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (left + up) // 2) & 0xFF
        elif kind == 4:
            corner = previous[i - step] if i >= step else 0
            estimate = left + up - corner
            pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
            best = left if pa <= pb and pa <= pc else up if pb <= pc else corner
            line[i] = (line[i] + best) & 0xFF
        else:
            raise AssertionError(f"PNG filter {kind}")
    return line
