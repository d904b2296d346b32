// Copies the few dist files the buyers' page loads from node_modules/ into dist/, the one
// folder Django's STATICFILES_DIRS reads (served under /static/web/vendor/). Run by `npm ci`
// (postinstall); dist/ and node_modules/ are not committed.
import { cpSync, mkdirSync, rmSync } from "node:fs";

const files = {
  leaflet: ["leaflet.js", "leaflet.js.map", "leaflet.css", "images/layers.png", "images/layers-2x.png", "images/marker-icon.png", "images/marker-icon-2x.png", "images/marker-shadow.png"],
  "leaflet-draw": ["leaflet.draw.js", "leaflet.draw.css", "images/spritesheet.png", "images/spritesheet-2x.png", "images/spritesheet.svg"],
  "chart.js": ["chart.umd.min.js", "chart.umd.min.js.map"],
};

rmSync("dist", { recursive: true, force: true });
for (const [pkg, names] of Object.entries(files)) {
  for (const name of names) {
    const target = `dist/web/vendor/${pkg}/${name}`;
    mkdirSync(target.slice(0, target.lastIndexOf("/")), { recursive: true });
    cpSync(`node_modules/${pkg}/dist/${name}`, target);
  }
}
