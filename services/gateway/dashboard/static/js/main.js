// The dashboard: ask for the apiKey (or take it from the URL fragment `#key=...`), then follow the
// bot over this gateway's `/ws`. The chart library is loaded on its own, so a gateway without it
// still shows figures and trades.

import { StatusClient, websocketUrl } from "./connection.js";
import { BotState } from "./state.js";
import { DashboardView } from "./view.js";

const CHART_LIBRARY = "../vendor/lightweight-charts.standalone.production.mjs";
const KEY_STORAGE = "bandwagon.apiKey"; // this tab only (sessionStorage)

const STATE_TEXT = {
  idle: "waiting for a key",
  connecting: "connecting",
  live: "live",
  reconnecting: "reconnecting",
  "rate-limited": "rate limited: waiting a minute",
  unauthorized: "unauthorized",
};

const $ = (selector) => document.querySelector(selector);

async function loadChartLibrary() {
  try {
    const lib = await import(CHART_LIBRARY);
    if (typeof lib.createChart !== "function") throw new Error("no createChart");
    return lib;
  } catch (error) {
    console.warn("charts unavailable:", error);
    $("#charts-unavailable").hidden = false;
    return null;
  }
}

/** The key from `#key=...` (then removed from the address bar), else this tab's stored key. */
function initialKey() {
  // Not URLSearchParams: it would read a "+" of the key as a space.
  const match = /(?:^|&)key=([^&]*)/.exec(location.hash.slice(1));
  const key = match ? decodeKey(match[1]) : null;
  if (key) {
    history.replaceState(null, "", location.pathname + location.search);
    return key;
  }
  try {
    return sessionStorage.getItem(KEY_STORAGE);
  } catch {
    return null;
  }
}

function decodeKey(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text; // a stray "%": take it as typed
  }
}

function rememberKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // storage disabled: the key lives only as long as the page
  }
}

function showConnection(name, detail = {}) {
  const element = $("#connection");
  element.dataset.state = name;
  let text = STATE_TEXT[name] ?? name;
  if (name === "reconnecting" && detail.delayMs !== undefined) {
    text += ` in ${(detail.delayMs / 1000).toFixed(1)} s`;
    if (detail.reason) text += ` (${detail.reason})`;
  }
  $("#connection-text").textContent = text;
}

function showNotice(text) {
  $("#notice").textContent = text;
  $("#notice").hidden = !text;
}

async function main() {
  const chartLib = await loadChartLibrary();
  const view = new DashboardView(chartLib);
  const debug = { chartsAvailable: chartLib !== null, client: null };
  window.bandwagonDashboard = debug; // read by the browser test and curious users
  let client = null;

  const askForKey = (error = "") => {
    $("#key-form").hidden = false;
    $("#change-key").hidden = true;
    $("#key-error").textContent = error;
    $("#key-error").hidden = !error;
    $("#api-key").focus();
  };

  const connect = (apiKey) => {
    if (client) client.stop();
    $("#key-form").hidden = true;
    $("#change-key").hidden = false;
    showNotice("");
    const state = new BotState();
    client = new StatusClient(websocketUrl(location), apiKey, state, {
      onState: (name, detail) => {
        showConnection(name, detail);
        if (name === "live") showNotice("");
        if (name === "unauthorized") {
          rememberKey(null);
          askForKey("The gateway refused this key (unauthorized). Check it and try again.");
        }
      },
      onInit: () => {
        $("#bot").hidden = false;
        $("#trades-card").hidden = false;
        view.renderAll(state);
      },
      onRefresh: (changes) => view.renderRefresh(state, changes),
      onError: (code, message) => {
        if (code !== "unauthorized") showNotice(`${code}: ${message}`);
      },
    });
    debug.client = client;
    debug.state = state;
    debug.view = view;
    client.start();
  };

  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("#api-key").value.trim();
    if (!key) return;
    $("#api-key").value = "";
    rememberKey(key);
    connect(key);
  });
  $("#change-key").addEventListener("click", () => {
    if (client) client.stop();
    client = null;
    rememberKey(null);
    showConnection("idle");
    askForKey();
  });

  const key = initialKey();
  if (key) {
    rememberKey(key);
    connect(key);
  } else {
    askForKey();
  }
}

main();
