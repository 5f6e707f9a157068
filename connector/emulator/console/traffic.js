// Traffic: the emulator's own history of its request counters (a sample a second, two minutes), drawn
// as rates in hand-made SVG charts; opened late, the page still shows what happened before.
import { api, every } from "./api.js";
import { el, svg } from "./dom.js";

const WIDTH = 360;
const HEIGHT = 110;
const COLOURS = ["#1a7f37", "#cf222e", "#bf8700", "#8250df", "#0969da", "#bc4c00", "#57606a"]; // as .series0-6 in CSS
const DEVICE_ENDPOINTS = ["auth", "topic"];
const section = document.getElementById("traffic");
let history = []; // [{ at: seconds, counts: Map("endpoint outcome" -> count) }], oldest first
let capacity = 120; // samples the emulator keeps (one a second), the charts' width

function flatten(requests) {
  const counts = new Map();
  for (const [endpoint, outcomes] of Object.entries(requests)) {
    for (const [outcome, count] of Object.entries(outcomes)) counts.set(`${endpoint} ${outcome}`, count);
  }
  return counts;
}

/** Per second rates between consecutive samples of the counts `pick` adds up. */
function rates(pick) {
  const points = [];
  for (let i = 1; i < history.length; i++) {
    const seconds = history[i].at - history[i - 1].at;
    const sum = (sample) => [...sample.counts].reduce((total, [key, count]) => total + (pick(key) ? count : 0), 0);
    points.push(seconds > 0 ? Math.max(0, sum(history[i]) - sum(history[i - 1])) / seconds : 0);
  }
  return points;
}

function chart(title, series) {
  const peak = Math.max(0, ...series.flatMap((line) => line.points));
  const top = Math.max(1, peak); // the height of the chart: a quiet second does not fill it
  const drawing = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, width: WIDTH, height: HEIGHT, role: "img" });
  drawing.append(svg("line", { x1: 0, y1: HEIGHT - 0.5, x2: WIDTH, y2: HEIGHT - 0.5, stroke: "#d0d7de" }));
  series.forEach((line, index) => {
    const step = WIDTH / Math.max(1, capacity - 1);
    const offset = WIDTH - step * (line.points.length - 1);
    const coordinates = line.points.map((value, i) =>
      `${(offset + i * step).toFixed(1)},${(HEIGHT - 2 - (value / top) * (HEIGHT - 4)).toFixed(1)}`);
    drawing.append(svg("polyline", { points: coordinates.join(" "), fill: "none", "stroke-width": 1.5,
      stroke: COLOURS[index % COLOURS.length] }));
  });
  const legend = el("div", { class: "legend" }, ...series.map((line, index) =>
    el("span", { class: `series${index % COLOURS.length}` },
      `${line.name}: ${(line.points.at(-1) ?? 0).toFixed(1)}/s`)));
  const caption = `${title}: peak ${peak.toFixed(1)}/s in the last ${Math.round(capacity / 60)} minutes`;
  return el("figure", { "data-chart": title }, el("figcaption", {}, caption), drawing, legend);
}

function draw() {
  const keys = new Set(history.flatMap((sample) => [...sample.counts.keys()]));
  const charts = DEVICE_ENDPOINTS.map((endpoint) => {
    const outcomes = [...keys].filter((key) => key.startsWith(`${endpoint} `)).map((key) => key.slice(endpoint.length + 1));
    return chart(`/${endpoint} by outcome`, outcomes.sort().map((outcome) =>
      ({ name: outcome, points: rates((key) => key === `${endpoint} ${outcome}`) })));
  });
  const onDeviceChannel = (key) => DEVICE_ENDPOINTS.includes(key.split(" ")[0]);
  charts.push(chart("Too many requests (40000)", [{ name: "40000", points: rates((key) => onDeviceChannel(key) && key.endsWith(" 40000")) }]));
  charts.push(chart("Errors (every outcome but 0)", [{ name: "errors", points: rates((key) => onDeviceChannel(key) && !key.endsWith(" 0")) }]));
  document.getElementById("charts").replaceChildren(...charts);
}

async function refresh() {
  const traffic = await api("/traffic");
  capacity = traffic.seconds;
  history = traffic.samples.map((sample) => ({ at: sample.at / 1000, counts: flatten(sample.requests) }));
  draw();
}

export function start() {
  every(1000, section, refresh);
}
