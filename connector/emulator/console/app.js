// The console's entry: one section shown at a time, chosen by the address's #fragment.
import { api, every, showError } from "./api.js";
import * as control from "./control.js";
import * as devices from "./devices.js";
import * as messages from "./messages.js";
import * as traffic from "./traffic.js";

const SECTIONS = ["messages", "devices", "traffic", "control"];

function showSection() {
  const wanted = SECTIONS.includes(location.hash.slice(1)) ? location.hash.slice(1) : SECTIONS[0];
  for (const name of SECTIONS) {
    document.getElementById(name).classList.toggle("current", name === wanted);
    document.querySelector(`nav a[href="#${name}"]`).classList.toggle("current", name === wanted);
  }
}

window.addEventListener("hashchange", showSection);
showSection();
messages.start();
devices.start();
traffic.start();
control.start().catch(showError);
every(1000, null, async () => {
  const counters = await api("/counters");
  document.getElementById("status").textContent = `${counters.messages} messages stored`;
});
document.body.dataset.ready = "true";
