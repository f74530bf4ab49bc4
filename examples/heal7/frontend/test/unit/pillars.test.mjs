import assert from "node:assert/strict";
import { test } from "node:test";

import { buildQuery, describePillars, elementBalance, resolveApiBase } from "../../src/pillars.js";

const pillar = (hanja, element, animal) => ({ hanja, hangul: "", romanized: "", element, animal });
const answer = {
  pillars: {
    year: pillar("庚午", "metal", "horse"),
    month: pillar("辛巳", "metal", "snake"),
    day: pillar("壬午", "water", "horse"),
    hour: pillar("丁未", "fire", "goat"),
  },
};

test("a date and time become the backend's query", () => {
  const built = buildQuery({ date: "1990-05-17", time: "14:30", tz: "Asia/Seoul" });
  assert.equal(built.query, "birth=1990-05-17T14%3A30&tz=Asia%2FSeoul");
  assert.equal(built.assumedNoon, false);
});

test("no birth time means noon, and says so", () => {
  const built = buildQuery({ date: "1990-05-17", time: "", tz: "" });
  assert.equal(new URLSearchParams(built.query).get("birth"), "1990-05-17T12:00");
  assert.equal(built.assumedNoon, true);
});

test("bad input names the field to fix", () => {
  assert.match(buildQuery({ date: "17/05/1990" }).error, /^Birth date:/);
  assert.match(buildQuery({ date: "1850-01-01" }).error, /1900 to 2100/);
  assert.match(buildQuery({ date: "1990-05-17", time: "2pm" }).error, /^Birth time:/);
});

test("the chart reads hour, day, month, year", () => {
  const rows = describePillars(answer);
  assert.deepEqual(rows.map((row) => row.hanja), ["丁未", "壬午", "辛巳", "庚午"]);
  assert.equal(rows[0].detail, "fire · goat");
});

test("an answer without pillars is an error, not an empty chart", () => {
  assert.throws(() => describePillars({ error: "calculation failed" }), /no pillars/);
  assert.throws(() => describePillars({ pillars: { year: answer.pillars.year } }), /no hour pillar/);
});

test("element balance counts the four stems", () => {
  assert.deepEqual(elementBalance(answer), { wood: 0, fire: 1, earth: 0, metal: 2, water: 1 });
});

test("the API base may take the page's own port", () => {
  assert.equal(resolveApiBase("", { port: "8081", protocol: "http:" }), "");
  assert.equal(resolveApiBase("https://api.heal7.example", { port: "", protocol: "https:" }), "https://api.heal7.example");
  assert.equal(resolveApiBase("http://localhost:{port}", { port: "18082", protocol: "http:" }), "http://localhost:18082");
  assert.equal(resolveApiBase("https://api.example:{port}", { port: "", protocol: "https:" }), "https://api.example:443");
  assert.equal(resolveApiBase("http://api.example:{port}", { port: "", protocol: "http:" }), "http://api.example:80");
});

test("no date at all names the date field", () => {
  assert.match(buildQuery({ date: null }).error ?? "", /^Birth date:/);
});
