// Devices: searched and paged on the server, refreshed every two seconds.
import { api, every } from "./api.js";
import { el, formatTime } from "./dom.js";

const PAGE = 50;
const section = document.getElementById("devices");
const rows = document.getElementById("device-rows");
const search = document.getElementById("device-search");
let offset = 0;
let total = 0;

function row(device) {
  return el("tr", {},
    el("td", {}, device.productKey), el("td", {}, device.deviceName),
    el("td", {}, device.liveToken ? "yes" : "no"),
    el("td", { class: "number" }, device.messages), el("td", { class: "number" }, device.bytes),
    el("td", {}, formatTime(device.lastMessageAt)));
}

async function refresh() {
  const query = new URLSearchParams({ q: search.elements.q.value, offset, limit: PAGE });
  const page = await api(`/console/devices?${query}`);
  total = page.total;
  rows.replaceChildren(...page.devices.map(row));
  const last = Math.min(offset + PAGE, total);
  document.getElementById("devices-info").textContent =
    total ? `${offset + 1}–${last} of ${total} devices` : "no devices match";
  document.getElementById("devices-previous").disabled = offset === 0;
  document.getElementById("devices-next").disabled = last >= total;
}

export function start() {
  search.addEventListener("submit", (event) => event.preventDefault());
  search.elements.q.addEventListener("input", () => { offset = 0; refresh(); });
  document.getElementById("devices-previous").addEventListener("click", () => {
    offset = Math.max(0, offset - PAGE);
    refresh();
  });
  document.getElementById("devices-next").addEventListener("click", () => {
    if (offset + PAGE < total) offset += PAGE;
    refresh();
  });
  every(2000, section, refresh);
}
