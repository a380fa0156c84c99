// Converts Natural Earth 110m land (TopoJSON from the npm package world-atlas 2.0.2,
// data/world/land-110m.json) into one SVG path in an equirectangular projection:
// (implicit lineto after M)
// x = lon + 180 (0..360), y = 90 - lat (0..180), one decimal, rings simplified with
// Douglas-Peucker at TOLERANCE degrees. Run: node data/world/build.mjs > data/world/land-110m.path
import { readFileSync } from "node:fs";

const TOLERANCE = 0.25; // degrees; keeps the outline recognisable at dashboard scale
const MIN_RING_POINTS = 4; // drop rings that collapse below a triangle

const here = new URL(".", import.meta.url);
const topo = JSON.parse(readFileSync(new URL("land-110m.json", here), "utf8"));
const [sx, sy] = topo.transform.scale;
const [tx, ty] = topo.transform.translate;

// Decode delta-encoded, quantized arcs into absolute lon/lat points.
const arcs = topo.arcs.map((arc) => {
  let x = 0, y = 0;
  return arc.map(([dx, dy]) => { x += dx; y += dy; return [x * sx + tx, y * sy + ty]; });
});

function ringPoints(indexes) {
  const out = [];
  for (const i of indexes) {
    const pts = i >= 0 ? arcs[i] : arcs[~i].slice().reverse();
    // consecutive arcs share their end/start point
    out.push(...(out.length ? pts.slice(1) : pts));
  }
  return out;
}

function simplify(pts, tol) {
  if (pts.length <= 3) return pts;
  const keep = new Uint8Array(pts.length);
  keep[0] = keep[pts.length - 1] = 1;
  const stack = [[0, pts.length - 1]];
  while (stack.length) {
    const [a, b] = stack.pop();
    const [ax, ay] = pts[a], [bx, by] = pts[b];
    const dx = bx - ax, dy = by - ay, len = Math.hypot(dx, dy);
    let best = -1, bestD = tol;
    for (let i = a + 1; i < b; i++) {
      const [px, py] = pts[i];
      const d = len === 0 ? Math.hypot(px - ax, py - ay) : Math.abs(dy * px - dx * py + bx * ay - by * ax) / len;
      if (d > bestD) { bestD = d; best = i; }
    }
    if (best >= 0) { keep[best] = 1; stack.push([a, best], [best, b]); }
  }
  return pts.filter((_, i) => keep[i]);
}

// Rings that cross the antimeridian (Chukotka, Fiji) jump from +180 to -180. Unwrap them into
// one continuous ring and draw it twice, once shifted by 360 degrees; the map clips the overflow.
// A ring around a pole does not close when unwrapped (Antarctica): keep it as it is.
function unwrap(pts) {
  const out = [pts[0]];
  let shift = 0;
  for (let i = 1; i < pts.length; i++) {
    const d = pts[i][0] - pts[i - 1][0];
    if (d > 180) shift -= 360;
    else if (d < -180) shift += 360;
    out.push([pts[i][0] + shift, pts[i][1]]);
  }
  if (shift !== 0) return [pts];
  const min = Math.min(...out.map((p) => p[0])), max = Math.max(...out.map((p) => p[0]));
  if (min < -180) return [out, out.map(([x, y]) => [x + 360, y])];
  if (max > 180) return [out, out.map(([x, y]) => [x - 360, y])];
  return [out];
}

const fmt = (v) => (Math.round(v * 10) / 10).toString();
let d = "";
let rings = 0, points = 0;
for (const geom of topo.objects.land.geometries) {
  const polys = geom.type === "Polygon" ? [geom.arcs] : geom.arcs;
  for (const poly of polys) {
    for (const ring of poly) {
      const simple = simplify(ringPoints(ring), TOLERANCE);
      if (simple.length < MIN_RING_POINTS) continue;
      for (const pts of unwrap(simple)) {
        rings++; points += pts.length;
        d += "M" + pts.map(([lon, lat]) => fmt(lon + 180) + " " + fmt(90 - lat)).join(" ") + "Z";
      }
    }
  }
}
process.stdout.write(d);
process.stderr.write(`rings=${rings} points=${points} bytes=${d.length}\n`);
