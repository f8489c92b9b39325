// Writes the HTML template for `dvc plots show/diff --html-template FILE`: page.html with vega, vega-lite and
// vega-embed (the versions package-lock.json pins; `npm ci` first) inlined, so the plots render with no network.
// Usage: node tools/dvc-plots/build.mjs [FILE]   (FILE defaults to build/dvc-plots/template.html; build/ is ignored)
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? "build/dvc-plots/template.html");
// dvc_render/html.py fills these three by plain string replacement; {plot_divs} is required.
const PLACEHOLDERS = ["{plot_divs}", "{scripts}", "{refresh_tag}"];
const BUNDLES = { vega: "vega.min.js", "vega-lite": "vega-lite.min.js", "vega-embed": "vega-embed.min.js" };

function bundle(name) {
  const dir = resolve(here, "node_modules", name);
  const { version } = JSON.parse(readFileSync(resolve(dir, "package.json"), "utf8"));
  const js = readFileSync(resolve(dir, "build", BUNDLES[name]), "utf8").replace(/\n\/\/# sourceMappingURL=\S+\s*$/, "\n");
  // Inside <script>, "</script" or "<!--" would end or derail the element; a placeholder would be filled by DVC.
  for (const bad of ["</script", "<!--", ...PLACEHOLDERS]) {
    if (js.toLowerCase().includes(bad)) throw new Error(`${name}: its bundle contains ${JSON.stringify(bad)}`);
  }
  return `/* ${name} ${version} */\n${js}`;
}

let page = readFileSync(resolve(here, "page.html"), "utf8");
for (const name of Object.keys(BUNDLES)) {
  const marker = `/*@LIB ${name}@*/`;
  if (page.split(marker).length !== 2) throw new Error(`page.html must hold ${marker} once`);
  page = page.replace(marker, () => bundle(name));
}
if (page.split("{plot_divs}").length !== 2) throw new Error("the template must hold {plot_divs} exactly once");
if (page.includes("{scripts}")) throw new Error("the template must not hold {scripts}: DVC puts CDN <script src> tags there");
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, page);
console.log(`${out} (${Math.round(page.length / 1024)} KiB)`);
