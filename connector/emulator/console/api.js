// The emulator's admin API, as JSON in and out; a refusal becomes an Error with the API's own words.
//
// The console's address carries this run's admin token (?token=...): it is kept for this tab only and
// taken out of the address bar, and every request sends it, as changes need it.

const TOKEN_KEY = "emulator-admin-token";
const opened = new URL(location.href);
if (opened.searchParams.has("token")) {
  sessionStorage.setItem(TOKEN_KEY, opened.searchParams.get("token"));
  opened.searchParams.delete("token");
  history.replaceState(null, "", opened);
}

export async function api(path, body) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token !== null) headers["X-Emulator-Token"] = token;
  const options = { headers };
  if (body !== undefined) {
    options.method = "POST";
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`/_emulator${path}`, options);
  } catch {
    throw new Error("the emulator did not answer: is it still running?");
  }
  const reply = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(reply.error || `the emulator answered HTTP ${response.status}`);
  return reply;
}

/** Call refresh now and every `ms` while its section is shown (always when section is null); errors go
 * to the page's error line. */
export function every(ms, section, refresh) {
  const run = async () => {
    if ((section === null || section.classList.contains("current")) && !document.hidden) {
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
  line.textContent = error === null ? "" : `Not up to date: ${error.message}`;
}
