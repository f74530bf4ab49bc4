// The calculator component: the birth form, its status line and the chart, wired to a fetch
// function. Given its root and its fetch, so component tests drive it under jsdom with a fake
// backend and the browser tests drive the real one.
import { buildQuery, describePillars, elementBalance } from "./pillars.js";

/**
 * @typedef {import("./pillars.js").Answer} Answer
 * @typedef {(url: string) => Promise<{ok: boolean, status: number, json: () => Promise<unknown>}>} Fetch
 */

/**
 * @param {Document} document
 * @param {string} text
 * @param {string} [className]
 */
function cell(document, text, className) {
  const element = document.createElement("td");
  element.textContent = text;
  if (className) element.className = className;
  return element;
}

/**
 * Draw an answer into the chart's body and the element balance.
 * @param {HTMLElement} chart
 * @param {HTMLElement} balance
 * @param {Answer} answer
 */
export function drawChart(chart, balance, answer) {
  const document = chart.ownerDocument;
  chart.replaceChildren();
  for (const row of describePillars(answer)) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = row.label;
    tr.append(th, cell(document, row.hanja, "hanja"), cell(document, row.hangul), cell(document, row.romanized), cell(document, row.detail));
    chart.append(tr);
  }
  balance.textContent = Object.entries(elementBalance(answer))
    .map(([element, count]) => `${element} ${count}`)
    .join(" · ");
}

/**
 * @param {Document} document
 * @param {string} selector
 * @returns {HTMLElement}
 */
function find(document, selector) {
  const element = document.querySelector(selector);
  if (element === null) throw new Error(`the page has no ${selector}`);
  return /** @type {HTMLElement} */ (element);
}

/**
 * Wire the form of `root` to the backend at `apiBase`. Returns `submitted()`, the promise of
 * the last submission's answer being shown (for tests).
 * @param {Document} root
 * @param {{fetch: Fetch, apiBase: string}} options
 */
export function mountCalculator(root, { fetch, apiBase }) {
  const form = /** @type {HTMLFormElement} */ (find(root, "#birth-form"));
  const date = /** @type {HTMLInputElement} */ (find(root, "#date"));
  const time = /** @type {HTMLInputElement} */ (find(root, "#time"));
  const tz = /** @type {HTMLSelectElement} */ (find(root, "#tz"));
  const status = find(root, "#status");
  const chart = find(root, "#chart");
  const balance = find(root, "#balance");

  /** @param {string} message @param {boolean} [isError] */
  function show(message, isError = false) {
    status.textContent = message;
    status.className = isError ? "error" : "";
  }

  async function calculate() {
    const built = buildQuery({ date: date.value, time: time.value, tz: tz.value });
    if (built.error !== undefined) {
      show(built.error, true);
      return;
    }
    show("Calculating…");
    try {
      const response = await fetch(`${apiBase}/api/saju?${built.query}`);
      const answer = /** @type {Answer & {error?: string}} */ (await response.json());
      if (!response.ok) {
        show(answer.error ?? `The calculator answered ${response.status}.`, true);
        return;
      }
      drawChart(chart, balance, answer);
      const note = built.assumedNoon ? " (no birth time: noon assumed)" : "";
      const cached = answer.cached ? ", from the cache" : "";
      show(`Calculated by heal7-backend ${answer.version ?? "?"}${cached}${note}.`);
    } catch (error) {
      show(`The calculator could not be reached: ${error instanceof Error ? error.message : String(error)}`, true);
    }
  }

  /** @type {Promise<void>} */
  let last = Promise.resolve();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    last = calculate();
  });
  return { submitted: () => last };
}
