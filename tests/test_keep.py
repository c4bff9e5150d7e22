"""--svg and --html: the view as the terminal shows it, kept as a picture or a page."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from lookinside.cli.app import app

runner = CliRunner()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_svg_and_html_hold_the_view(tmp_path):
    svg, html = tmp_path / "table.svg", tmp_path / "table.html"
    result = runner.invoke(app, ["next-token", "The capital of France is", "--model", "tiny", "--svg", str(svg),
                                 "--html", str(html)])
    assert result.exit_code == 0, result.output
    root = ET.parse(svg).getroot()  # well-formed SVG
    assert root.tag.endswith("svg")
    text = "".join(root.itertext()).replace("\xa0", " ")
    assert "Top 10 next tokens" in text and "Paris" in text and "0.9995" in text
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "Paris" in page and "color:" in page  # colours kept inline


@pytest.mark.parametrize("command", [["lens", "The capital of France is"], ["inspect"], ["diff", "Hi there.",
                                                                                      "--against-attn", "eager"]])
def test_every_view_command_keeps_pictures(tmp_path, command):
    svg = tmp_path / "view.svg"
    model = [] if command == ["inspect"] else ["--model", "tiny"]
    result = runner.invoke(app, [*command, *model, "--svg", str(svg)])
    assert result.exit_code == 0, result.output
    assert ET.parse(svg).getroot().tag.endswith("svg")


def test_an_unwritable_picture_is_one_line_and_nothing_half_written(tmp_path):
    result = runner.invoke(app, ["next-token", "hi", "--model", "tiny", "--svg", str(tmp_path / "no" / "x.svg")])
    assert result.exit_code != 0 and "there is no directory" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
@pytest.mark.slow
def test_chromium_renders_the_svg_with_the_tables_text(tmp_path):
    svg = tmp_path / "table.svg"
    runner.invoke(app, ["next-token", "The capital of France is", "--model", "tiny", "--svg", str(svg)])
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", svg.as_uri()], capture_output=True, text=True, timeout=120)
    assert "Paris" in dom.stdout and "Top 10 next tokens" in dom.stdout.replace("&nbsp;", " ").replace("\xa0", " ")
    png = tmp_path / "table.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={png}", "--window-size=1000,700", svg.as_uri()],
                   capture_output=True, timeout=120)
    assert png.exists() and png.stat().st_size > 5000
