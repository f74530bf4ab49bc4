// The calculator component in a DOM (jsdom): the page's own markup, a fake backend.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";

import { JSDOM } from "jsdom";

import { drawChart, mountCalculator } from "../../src/calculator.js";

const PAGE = await readFile(new URL("../../src/index.html", import.meta.url), "utf8");

const pillar = (hanja, hangul, romanized, element, animal) => ({ hanja, hangul, romanized, element, animal });
const ANSWER = {
  version: "0.1.0",
  cached: false,
  pillars: {
    year: pillar("庚午", "경오", "gyeong-o", "metal", "horse"),
    month: pillar("辛巳", "신사", "sin-sa", "metal", "snake"),
    day: pillar("壬午", "임오", "im-o", "water", "horse"),
    hour: pillar("丁未", "정미", "jeong-mi", "fire", "goat"),
  },
};

/** The page without its module script, the calculator mounted on a fake backend. */
function page(reply) {
  const dom = new JSDOM(PAGE.replace(/<script[^>]*><\/script>/, ""));
  const document = dom.window.document;
  const asked = [];
  const fetch = async (url) => {
    asked.push(url);
    return reply(url);
  };
  const mounted = mountCalculator(document, { fetch, apiBase: "http://api.test" });
  const submit = async ({ date, time = "", tz = "Asia/Seoul" }) => {
    document.querySelector("#date").value = date;
    document.querySelector("#time").value = time;
    document.querySelector("#tz").value = tz;
    document.querySelector("#birth-form").dispatchEvent(new dom.window.Event("submit", { cancelable: true }));
    await mounted.submitted();
  };
  const text = (selector) => document.querySelector(selector).textContent;
  const rows = () => [...document.querySelectorAll("#chart tr")].map((tr) => [...tr.children].map((c) => c.textContent));
  return { document, asked, submit, text, rows };
}

const json = (status, body) => ({ ok: status < 400, status, json: async () => body });

test("a calculation asks the backend and draws the chart, hour to year", async () => {
  const view = page(() => json(200, ANSWER));
  await view.submit({ date: "1990-05-17", time: "14:30" });
  assert.deepEqual(view.asked, ["http://api.test/api/saju?birth=1990-05-17T14%3A30&tz=Asia%2FSeoul"]);
  assert.deepEqual(view.rows()[0], ["Hour 時柱", "丁未", "정미", "jeong-mi", "fire · goat"]);
  assert.deepEqual(view.rows().map((row) => row[1]), ["丁未", "壬午", "辛巳", "庚午"]);
  assert.equal(view.text("#balance"), "wood 0 · fire 1 · earth 0 · metal 2 · water 1");
  assert.equal(view.text("#status"), "Calculated by heal7-backend 0.1.0.");
  assert.equal(view.document.querySelector("#status").className, "");
});

test("no birth time says noon was assumed, and a cached answer says so", async () => {
  const view = page(() => json(200, { ...ANSWER, cached: true }));
  await view.submit({ date: "1990-05-17" });
  assert.match(view.asked[0], /birth=1990-05-17T12%3A00/);
  assert.equal(view.text("#status"), "Calculated by heal7-backend 0.1.0, from the cache (no birth time: noon assumed).");
});

test("bad input is refused on the page, naming the field, without asking the backend", async () => {
  const view = page(() => json(200, ANSWER));
  await view.submit({ date: "1850-01-01" });
  assert.deepEqual(view.asked, []);
  assert.equal(view.text("#status"), "Birth date: the calculator covers 1900 to 2100.");
  assert.equal(view.document.querySelector("#status").className, "error");
});

test("the backend's error sentence is shown, and the old chart is kept", async () => {
  let answer = json(200, ANSWER);
  const view = page(() => answer);
  await view.submit({ date: "1990-05-17", time: "14:30" });
  answer = json(500, { error: "calculation failed", version: "0.2.0" });
  await view.submit({ date: "1991-01-01", time: "01:00" });
  assert.equal(view.text("#status"), "calculation failed");
  assert.equal(view.rows().length, 4);
  answer = json(502, {});
  await view.submit({ date: "1991-01-01", time: "01:00" });
  assert.equal(view.text("#status"), "The calculator answered 502.");
});

test("an unreachable backend is said in one sentence", async () => {
  const view = page(() => {
    throw new TypeError("Failed to fetch");
  });
  await view.submit({ date: "1990-05-17" });
  assert.equal(view.text("#status"), "The calculator could not be reached: Failed to fetch");
  assert.equal(view.document.querySelector("#status").className, "error");
});

test("a chart is drawn as rows headed by the pillar's name", () => {
  const { window } = new JSDOM(PAGE.replace(/<script[^>]*><\/script>/, ""));
  const chart = window.document.querySelector("#chart");
  drawChart(chart, window.document.querySelector("#balance"), ANSWER);
  const headers = [...chart.querySelectorAll("th[scope=row]")].map((th) => th.textContent);
  assert.deepEqual(headers, ["Hour 時柱", "Day 日柱", "Month 月柱", "Year 年柱"]);
});

test("a page without the form is an error naming what is missing", () => {
  const { window } = new JSDOM("<main></main>");
  assert.throws(
    () => mountCalculator(window.document, { fetch: async () => json(200, ANSWER), apiBase: "" }),
    /the page has no #birth-form/,
  );
});
