import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import { ASSETS, PAGES, build, checkApiBase } from "../../scripts/build.mjs";

test("build hashes every asset and rewrites the references to it", async () => {
  const outDir = await mkdtemp(join(tmpdir(), "heal7-dist-"));
  try {
    const manifest = await build({ outDir, apiBase: "https://api.heal7.example" });
    assert.deepEqual(Object.keys(manifest), ASSETS);
    const index = await readFile(join(outDir, "index.html"), "utf8");
    assert.ok(index.includes(`src="${manifest["app.js"]}"`));
    assert.ok(index.includes(`href="${manifest["style.css"]}"`));
    const app = await readFile(join(outDir, manifest["app.js"]), "utf8");
    assert.ok(app.includes(`"./${manifest["pillars.js"]}"`));
    assert.ok(app.includes(`"./${manifest["config.js"]}"`));
    const config = await readFile(join(outDir, manifest["config.js"]), "utf8");
    assert.ok(config.includes('API_BASE = "https://api.heal7.example"'));
    const about = await readFile(join(outDir, "about.html"), "utf8");
    assert.ok(about.includes(`src="${manifest["pillars.svg"]}"`));
    assert.ok(about.includes(`href="${manifest["logo.svg"]}"`));
    for (const page of PAGES) {
      const html = await readFile(join(outDir, page), "utf8");
      assert.match(html, /<html lang="en">/, page);
      assert.match(html, /<meta name="description" content="[^"]{50,}">/, page);
    }
    assert.equal(await readFile(join(outDir, "robots.txt"), "utf8"), "User-agent: *\nAllow: /\n");
  } finally {
    await rm(outDir, { recursive: true, force: true });
  }
});

test("another API base is another release: its names change", async () => {
  const a = await mkdtemp(join(tmpdir(), "heal7-dist-"));
  const b = await mkdtemp(join(tmpdir(), "heal7-dist-"));
  try {
    const first = await build({ outDir: a, apiBase: "" });
    const second = await build({ outDir: b, apiBase: "https://api.heal7.example" });
    assert.notEqual(first["config.js"], second["config.js"]);
    assert.notEqual(first["app.js"], second["app.js"]); // it imports config.js by name
    assert.equal(first["style.css"], second["style.css"]);
  } finally {
    await rm(a, { recursive: true, force: true });
    await rm(b, { recursive: true, force: true });
  }
});

test("a bad API base is refused with the variable's name", () => {
  assert.throws(() => checkApiBase("api.heal7.example"), /HEAL7_API_BASE must be an http\(s\) URL/);
  assert.throws(() => checkApiBase("https://api.heal7.example/"), /trailing slash/);
  assert.equal(checkApiBase(""), "");
  assert.equal(checkApiBase("http://localhost:{port}"), "http://localhost:{port}");
  assert.throws(() => checkApiBase("localhost:{port}"), /HEAL7_API_BASE must be an http\(s\) URL/);
});
