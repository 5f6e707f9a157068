// The emulator's admin API, as JSON in and out; a refusal becomes an Error with the API's own words.

export async function api(path, body) {
  const options = body === undefined ? {} :
    { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(`/_emulator${path}`, options);
  const reply = await response.json();
  if (!response.ok) throw new Error(reply.error || `HTTP ${response.status}`);
  return reply;
}

/** Call refresh now and every `ms` while its section is shown; errors go to the page's error line. */
export function every(ms, section, refresh) {
  const run = async () => {
    if (section.classList.contains("current") && !document.hidden) {
      try {
        await refresh();
        showError(null);
      } catch (error) {
        showError(error);
      }
    }
    setTimeout(run, ms);
  };
  run();
}

export function showError(error) {
  const line = document.getElementById("error");
  line.hidden = error === null;
  line.textContent = error === null ? "" : `The emulator did not answer: ${error.message}`;
}
