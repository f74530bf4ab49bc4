// What the page does with the backend's answers, kept free of the DOM so node:test can run it.

/**
 * @typedef {{hanja: string, hangul: string, romanized: string, element: Element5, animal: string}} Pillar
 * @typedef {"wood" | "fire" | "earth" | "metal" | "water"} Element5
 * @typedef {"hour" | "day" | "month" | "year"} PillarName
 * @typedef {{pillars: Record<PillarName, Pillar>, version?: string, cached?: boolean}} Answer
 * @typedef {{name: PillarName, label: string, hanja: string, hangul: string, romanized: string, detail: string}} Row
 * @typedef {{query: string, assumedNoon: boolean, error?: undefined} | {error: string, query?: undefined, assumedNoon?: undefined}} Built
 */

/** @type {readonly PillarName[]} read right to left in a chart */
export const PILLAR_ORDER = ["hour", "day", "month", "year"];

/** @type {Record<PillarName, string>} */
const LABELS = { year: "Year 年柱", month: "Month 月柱", day: "Day 日柱", hour: "Hour 時柱" };

/**
 * The query for /api/saju, or an error sentence naming the field to fix.
 * @param {{date?: string | null, time?: string | null, tz?: string | null}} input
 * @returns {Built}
 */
export function buildQuery({ date, time, tz }) {
  if (!date || !/^\d{4}-\d{2}-\d{2}$/.test(date)) {
    return { error: "Birth date: enter a date like 1990-05-17." };
  }
  const year = Number(date.slice(0, 4));
  if (year < 1900 || year > 2100) {
    return { error: "Birth date: the calculator covers 1900 to 2100." };
  }
  const clock = time && /^\d{2}:\d{2}$/.test(time) ? time : null;
  if (time && !clock) {
    return { error: "Birth time: enter a time like 14:30, or leave it empty for noon." };
  }
  const params = new URLSearchParams({ birth: `${date}T${clock ?? "12:00"}` });
  if (tz) params.set("tz", tz);
  return { query: params.toString(), assumedNoon: clock === null };
}

/**
 * Rows for the chart: label, hanja, hangul, romanized, element and animal of each pillar.
 * @param {unknown} answer
 * @returns {Row[]}
 */
export function describePillars(answer) {
  const pillars = /** @type {{pillars?: Partial<Record<PillarName, Pillar>>} | null} */ (answer)?.pillars;
  if (!pillars || typeof pillars !== "object") {
    throw new Error("the backend's answer has no pillars");
  }
  return PILLAR_ORDER.map((name) => {
    const pillar = pillars[name];
    if (!pillar) throw new Error(`the backend's answer has no ${name} pillar`);
    return {
      name,
      label: LABELS[name],
      hanja: pillar.hanja,
      hangul: pillar.hangul,
      romanized: pillar.romanized,
      detail: `${pillar.element} · ${pillar.animal}`,
    };
  });
}

/**
 * Counts of the five elements among the four stems: the first thing a reader looks at.
 * @param {Answer} answer
 * @returns {Record<Element5, number>}
 */
export function elementBalance(answer) {
  const counts = { wood: 0, fire: 0, earth: 0, metal: 0, water: 0 };
  for (const name of PILLAR_ORDER) counts[answer.pillars[name].element] += 1;
  return counts;
}

/**
 * Where the page asks for calculations: the built API base with `{port}` replaced by the
 * page's own port (so one build serves every environment of a platform whose entry points
 * differ by port: Slipway's local one sends the bare `localhost:PORT` to the backend), or ""
 * (the same origin).
 * @param {string} base
 * @param {{port: string, protocol: string}} location
 * @returns {string}
 */
export function resolveApiBase(base, location) {
  if (!base.includes("{port}")) return base;
  const port = location.port || (location.protocol === "https:" ? "443" : "80");
  return base.replaceAll("{port}", port);
}
