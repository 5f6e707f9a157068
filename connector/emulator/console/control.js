// Control: faults, limits, devices, products, tokens and reset, all through the existing admin API.
import { api } from "./api.js";
import { el, report } from "./dom.js";

const result = (form) => form.querySelector(".result");
const number = (input) => (input.value === "" ? undefined : Number(input.value));

/** "30001=0.5, 10000=0.1" as {"30001": 0.5, "10000": 0.1}, and back. */
function parseRates(text) {
  const rates = {};
  for (const pair of text.split(",").map((part) => part.trim()).filter(Boolean)) {
    const [code, probability] = pair.split("=").map((part) => part.trim());
    rates[code] = Number(probability);
  }
  return rates;
}
const formatRates = (rates) => Object.entries(rates).map(([code, p]) => `${code}=${p}`).join(", ");

function showFaults(form, faults) {
  const fields = form.elements;
  fields.error_rate.value = formatRates(faults.error_rate);
  fields.http_status_rate.value = formatRates(faults.http_status_rate);
  for (const name of ["drop_rate", "drop_after_store_rate", "latency_ms"]) fields[name].value = faults[name];
  fields.spike_rate.value = faults.latency_spike.rate;
  fields.spike_ms.value = faults.latency_spike.ms;
  fields.seed.value = faults.seed ?? "";
}

function readFaults(form) {
  const fields = form.elements;
  const spec = { error_rate: parseRates(fields.error_rate.value), http_status_rate: parseRates(fields.http_status_rate.value),
    latency_spike: { rate: number(fields.spike_rate) ?? 0, ms: number(fields.spike_ms) ?? 0 } };
  for (const name of ["drop_rate", "drop_after_store_rate", "latency_ms", "seed"]) {
    if (number(fields[name]) !== undefined) spec[name] = number(fields[name]);
  }
  return spec;
}

function showLimits(form, limits) {
  for (const [name, value] of Object.entries(limits)) form.elements[name].value = value;
}

async function showProducts() {
  const { products } = await api("/products");
  document.getElementById("product-list").replaceChildren(...(products.length ? products.map((product) =>
    el("li", {}, `${product.productKey}: ${product.publishTopics.join(", ") || "default categories only"}`)) :
    [el("li", {}, "No product declares topic categories: any /productKey/deviceName/user/... topic is accepted.")]));
}

/** Submit a form through `send`, reporting what happened beside its button. */
function onSubmit(form, send) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      report(result(form), await send());
    } catch (error) {
      report(result(form), error.message, true);
    }
  });
}

export async function start() {
  const faults = document.getElementById("faults");
  const limits = document.getElementById("limits");
  const actions = document.getElementById("actions");
  onSubmit(faults, async () => {
    showFaults(faults, await api("/faults", readFaults(faults)));
    return "Faults applied.";
  });
  onSubmit(limits, async () => {
    const changes = Object.fromEntries([...new FormData(limits)].filter(([, v]) => v !== "").map(([k, v]) => [k, Number(v)]));
    showLimits(limits, await api("/limits", changes));
    return "Limits applied.";
  });
  const adding = document.getElementById("add-device");
  onSubmit(adding, async () => {
    const reply = await api("/devices", [Object.fromEntries(new FormData(adding))]);
    adding.reset();
    return `Added; ${reply.devices} devices.`;
  });
  const products = document.getElementById("products");
  onSubmit(products, async () => {
    let declared;
    try {
      declared = JSON.parse(products.elements.products.value);
    } catch (error) {
      throw new Error(`not JSON: ${error.message}`);
    }
    const reply = await api("/products", declared);
    await showProducts();
    return `Declared ${reply.added} products.`;
  });
  const confirm = document.getElementById("reset-confirm");
  const act = async (send) => {
    try {
      report(result(actions), await send());
    } catch (error) {
      report(result(actions), error.message, true);
    }
  };
  document.getElementById("expire-tokens").addEventListener("click",
    () => act(async () => { await api("/tokens/expire", {}); return "All tokens expired."; }));
  document.getElementById("reset").addEventListener("click", () => { confirm.hidden = false; });
  document.getElementById("reset-no").addEventListener("click", () => { confirm.hidden = true; });
  document.getElementById("reset-yes").addEventListener("click", () => act(async () => {
    confirm.hidden = true;
    const products = document.getElementById("reset-products").checked;
    await api("/reset", products ? { products: true } : {});
    showFaults(faults, await api("/faults"));
    showLimits(limits, await api("/limits"));
    await showProducts();
    return `Reset: no messages, counts or faults${products ? "; topic categories as at start" : ""}.`;
  }));
  showFaults(faults, await api("/faults"));
  showLimits(limits, await api("/limits"));
  await showProducts();
}
