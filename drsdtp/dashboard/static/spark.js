// A sparkline: an inline SVG polyline of the last points (no library).
const NS = "http://www.w3.org/2000/svg";
const WIDTH = 160;
const HEIGHT = 32;

export function sparkline(label) {
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  svg.appendChild(document.createElementNS(NS, "polyline"));
  return svg;
}

export function draw(svg, points) {
  const line = svg.firstChild;
  if (points.length < 2) { line.setAttribute("points", ""); return; }
  const t0 = points[0][0], t1 = points[points.length - 1][0];
  let lo = Infinity, hi = -Infinity;
  for (const [, v] of points) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const dt = t1 - t0 || 1, dv = hi - lo || 1;
  line.setAttribute("points", points.map(([t, v]) =>
    `${((t - t0) / dt * (WIDTH - 2) + 1).toFixed(1)},${(HEIGHT - 1 - (v - lo) / dv * (HEIGHT - 2)).toFixed(1)}`).join(" "));
}
