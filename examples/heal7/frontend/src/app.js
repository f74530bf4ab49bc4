// The page: read the form, ask the backend, draw the chart.
import { API_BASE } from "./config.js";
import { buildQuery, describePillars, elementBalance } from "./pillars.js";

const form = document.querySelector("#birth-form");
const status = document.querySelector("#status");
const chart = document.querySelector("#chart");
const balance = document.querySelector("#balance");

function show(message, isError = false) {
  status.textContent = message;
  status.className = isError ? "error" : "";
}

function cell(text, className) {
  const element = document.createElement("td");
  element.textContent = text;
  if (className) element.className = className;
  return element;
}

function draw(answer) {
  chart.replaceChildren();
  for (const row of describePillars(answer)) {
    const tr = document.createElement("tr");
    tr.append(cell(row.label), cell(row.hanja, "hanja"), cell(row.hangul), cell(row.romanized), cell(row.detail));
    chart.append(tr);
  }
  const counts = elementBalance(answer);
  balance.textContent = Object.entries(counts)
    .map(([element, count]) => `${element} ${count}`)
    .join(" · ");
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(form);
  const built = buildQuery({ date: data.get("date"), time: data.get("time"), tz: data.get("tz") });
  if (built.error) {
    show(built.error, true);
    return;
  }
  show("Calculating…");
  try {
    const response = await fetch(`${API_BASE}/api/saju?${built.query}`);
    const answer = await response.json();
    if (!response.ok) {
      show(answer.error ?? `The calculator answered ${response.status}.`, true);
      return;
    }
    draw(answer);
    const note = built.assumedNoon ? " (no birth time: noon assumed)" : "";
    show(`Calculated by heal7-backend ${answer.version}${answer.cached ? ", from the cache" : ""}${note}.`);
  } catch (error) {
    show(`The calculator could not be reached: ${error.message}`, true);
  }
});
