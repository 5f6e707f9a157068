// Building the page from data without ever parsing it as HTML: payloads are untrusted.

/** An element with attributes and children; strings become text nodes, null children are left out. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  const present = children.filter((child) => child !== null && child !== undefined);
  node.append(...present.map((child) => (child instanceof Node ? child : String(child))));
  return node;
}

/** An SVG element (charts), attributes set the same way. */
export function svg(tag, attributes = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

/** A time in milliseconds since the epoch as local date and time. */
export function formatTime(ms) {
  return ms === null ? "" : new Date(ms).toLocaleString();
}

/** Tell what an action did next to its button. */
export function report(node, text, failed = false) {
  node.textContent = text;
  node.classList.toggle("failed", failed);
}
