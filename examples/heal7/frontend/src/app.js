// The page's entry: mount the calculator on this document, asking the backend the build names.
import { mountCalculator } from "./calculator.js";
import { API_BASE } from "./config.js";
import { resolveApiBase } from "./pillars.js";

mountCalculator(document, { fetch: (url) => window.fetch(url), apiBase: resolveApiBase(API_BASE, window.location) });
