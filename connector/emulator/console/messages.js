// The message log: newest first, live on its first page, older pages fetched by messageId from the server.
import { api, every } from "./api.js";
import { el, formatTime } from "./dom.js";

const PAGE = 50;
const section = document.getElementById("messages");
const list = document.getElementById("message-list");
const info = document.getElementById("messages-info");
const filter = document.getElementById("message-filter");
let before = null; // null: the newest page, refreshed live; else the messageId (a string) the page starts below
let older = null;
let shown = "";

function item(message) {
  return el("li", { "data-message-id": message.messageId },
    el("div", { class: "meta" },
      el("span", { class: "id", title: "messageId" }, message.messageId),
      el("span", {}, formatTime(message.receivedAt)),
      el("span", {}, `${message.productKey}/${message.deviceName}`),
      el("span", {}, message.topic),
      el("span", {}, `${message.size} bytes`),
      el("span", { class: "kind" }, message.kind + (message.truncated ? " (cut short)" : ""))),
    el("pre", {}, message.text));
}

async function refresh() {
  const query = new URLSearchParams({ limit: PAGE });
  for (const name of ["device", "topic"]) {
    const value = filter.elements[name].value.trim();
    if (value) query.set(name, value);
  }
  if (before !== null) query.set("before", before);
  const page = await api(`/console/messages?${query}`);
  older = page.next;
  document.getElementById("messages-older").disabled = older === null;
  info.textContent = `${page.stored} stored; ${before === null ? "newest, live" : "older page, not live"}`;
  const ids = page.messages.map((message) => message.messageId).join(",");
  if (ids !== shown) { // keep the reader's place when nothing arrived
    shown = ids;
    list.replaceChildren(...page.messages.map(item));
  }
}

export function start() {
  filter.addEventListener("submit", (event) => {
    event.preventDefault();
    before = null;
    refresh();
  });
  document.getElementById("messages-newest").addEventListener("click", () => { before = null; refresh(); });
  document.getElementById("messages-older").addEventListener("click", () => { before = older; refresh(); });
  every(1000, section, () => (before === null ? refresh() : Promise.resolve()));
}
