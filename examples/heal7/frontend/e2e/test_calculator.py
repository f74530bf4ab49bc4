"""HEAL7's pages in a browser (pytest-playwright), against a running frontend and backend.

`--base-url` is the frontend (Slipway's `browser` stage sets it, with Debian's Chromium); the
page asks the backend its build names (`HEAL7_API_BASE`). A calculation goes through the real
backend: these are the chart a person born on 17 May 1990 at 14:30 in Seoul gets.
"""

from __future__ import annotations

import re

from playwright.sync_api import ConsoleMessage, Page, expect

CHART_1990_05_17_1430_SEOUL = [
    ["Hour 時柱", "丁未", "정미", "jeong-mi", "fire · goat"],
    ["Day 日柱", "壬午", "임오", "im-o", "water · horse"],
    ["Month 月柱", "辛巳", "신사", "sin-sa", "metal · snake"],
    ["Year 年柱", "庚午", "경오", "gyeong-o", "metal · horse"],
]


def _rows(page: Page) -> list[list[str]]:
    rows = page.locator("#chart tr")
    return [rows.nth(i).locator("th, td").all_inner_texts() for i in range(rows.count())]


def test_a_birth_moment_is_calculated_by_the_backend(page: Page) -> None:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if _is_error(m) else None)
    page.goto("/")
    expect(page).to_have_title(re.compile("Four pillars"))
    page.get_by_label("Birth date").fill("1990-05-17")
    page.get_by_label("Birth time (local)").fill("14:30")
    page.get_by_label("Time zone").select_option("Asia/Seoul")
    page.get_by_role("button", name="Calculate").click()
    status = page.get_by_role("status")
    expect(status).to_have_text(re.compile(r"^Calculated by heal7-backend \d+\.\d+\.\d+"))
    assert _rows(page) == CHART_1990_05_17_1430_SEOUL
    expect(page.locator("#balance")).to_have_text("wood 0 · fire 1 · earth 0 · metal 2 · water 1")
    assert errors == []


def test_without_a_birth_time_noon_is_assumed_and_said(page: Page) -> None:
    page.goto("/")
    page.get_by_label("Birth date").fill("1990-05-17")
    page.get_by_role("button", name="Calculate").click()
    expect(page.get_by_role("status")).to_have_text(re.compile(r"noon assumed\)\.$"))
    assert _rows(page)[0][:2] == ["Hour 時柱", "丙午"]


def test_a_date_is_required_before_anything_is_asked(page: Page) -> None:
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/api/" in r.url else None)
    page.goto("/")
    page.get_by_role("button", name="Calculate").click()
    # The browser's own validation stops the form: no request, no chart.
    assert page.get_by_label("Birth date").evaluate("input => !input.validity.valid")
    assert asked == []
    assert _rows(page) == []


def test_the_about_page_is_reached_from_the_calculator_and_back(page: Page) -> None:
    page.goto("/")
    page.get_by_role("navigation", name="Main").get_by_role(
        "link", name="About the four pillars"
    ).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile("About the four pillars"))
    figure = page.get_by_role("img", name=re.compile("Four columns labelled hour, day"))
    expect(figure).to_be_visible()
    page.get_by_role("link", name="Calculate a chart").click()
    expect(page.get_by_role("button", name="Calculate")).to_be_visible()


def _is_error(message: ConsoleMessage) -> bool:
    return message.type == "error"
