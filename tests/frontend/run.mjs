// Runs one browser scenario against a running ComfyUI and writes what it observed as JSON.
//
//   node run.mjs <scenario> <args.json>
//
// args.json holds {url, out (result file), artifacts (screenshot folder), ...scenario args}. The
// scenario modules live in scenarios/<name>.mjs and export `default async function (ctx, args)`
// returning a JSON-serialisable observation; pytest makes the assertions. On failure a screenshot
// of the page is saved as <artifacts>/<scenario>-failure.png and the error goes into the result.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { launch, openComfy } from "./comfy.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const [name, argsFile] = process.argv.slice(2);
const args = JSON.parse(fs.readFileSync(argsFile, "utf8"));
const result = { scenario: name, ok: false };
let browser, ctx;
const started = Date.now();
try {
  const scenario = await import(pathToFileURL(path.join(here, "scenarios", `${name}.mjs`)).href);
  browser = await launch();
  ctx = await openComfy(browser, args.url, args.viewport ?? {});
  ctx.browser = browser;
  ctx.url = args.url;
  ctx.artifacts = args.artifacts;
  ctx.shot = (file) => path.join(args.artifacts, file);
  result.observed = await scenario.default(ctx, args);
  result.ok = true;
} catch (e) {
  result.error = `${e?.name ?? "Error"}: ${e?.message ?? e}`;
  result.stack = e?.stack ?? "";
  if (ctx?.page) {
    try { await ctx.page.screenshot({ path: path.join(args.artifacts, `${name}-failure.png`) }); } catch { /* page gone */ }
  }
} finally {
  result.seconds = (Date.now() - started) / 1000;
  if (ctx?.journal) result.journal = ctx.journal.entries;
  fs.mkdirSync(path.dirname(args.out), { recursive: true });
  fs.writeFileSync(args.out, JSON.stringify(result, null, 1));
  await browser?.close().catch(() => {});
}
process.exit(result.ok ? 0 : 1);
