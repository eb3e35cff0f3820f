// The status page: follows the account live through the public REST API with the pasted (or demo) bearer token.
// Two Server-Sent Event streams (EventSource) push the guard status and the event log; an event re-reads the
// reconciliation status and the positions. Prices move without events, so positions are also re-read every 10 s.
"use strict";
const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem("tm-token") || "",
  user: sessionStorage.getItem("tm-user") || "me",
  timer: null, poll: null, streams: [], pending: null, guards: null,
};

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: "Bearer " + state.token } });
  const body = await response.json().catch(() => ({ message: response.statusText }));
  if (!response.ok) {
    const info = (body.details || []).find((d) => (d["@type"] || "").endsWith("google.rpc.ErrorInfo"));
    const error = new Error(`${response.status}: ${body.message || response.statusText}${info ? " (" + info.reason + ")" : ""}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

const short = (name, prefix) => (name || "").replace(prefix, "");
const time = (t) => (t ? new Date(t).toLocaleString() : "—");
function text(el, value) { el.textContent = value; return el; }
function cell(row, value, cls) { const td = row.insertCell(); text(td, value ?? "—"); if (cls) td.className = cls; return td; }
function signed(v) { const n = Number(v); return !v ? "" : n > 0 ? "pos" : n < 0 ? "neg" : ""; }
function pairs(dl, entries) {
  dl.replaceChildren();
  for (const [k, v] of entries) {
    dl.append(text(document.createElement("dt"), k), text(document.createElement("dd"), v ?? "—"));
  }
}

function showVerdict(guards) {
  const v = $("verdict");
  const status = short(guards.systemStatus, "SYSTEM_STATUS_");
  if (guards.anyPositionsShouldClose) {
    v.className = "verdict close";
    text($("verdict-text"), `CLOSE ALL POSITIONS — system ${status}`);
  } else if (status === "HEALTHY") {
    v.className = "verdict ok";
    text($("verdict-text"), "Healthy: nothing to act on");
  } else {
    v.className = "verdict warn";
    text($("verdict-text"), `System ${status}`);
  }
}

function showGuards(guards) {
  state.guards = guards;
  showVerdict(guards);
  const d = guards.drawdown || {};
  pairs($("drawdown"), [
    ["Drawdown level", short(d.level, "DRAWDOWN_LEVEL_")],
    ["Drawdown", d.drawdownPercent ? d.drawdownPercent + " %" : "—"],
    ["Equity / peak", d.equity ? `${d.equity} / ${d.peakEquity} ${d.accountCurrency || ""}` : "—"],
    ["Thresholds", `${d.warningThresholdPercent} % warning, ${d.criticalThresholdPercent} % critical`],
    ["Close all (drawdown)", d.shouldCloseAll ? "YES" : "no"],
    ["Liquidation in", countdown(d)],
  ]);
  const alerts = $("alerts");
  alerts.replaceChildren();
  for (const a of guards.marketAlerts || []) {
    const row = alerts.insertRow();
    const severity = short(a.severity, "ALERT_SEVERITY_");
    cell(row, a.symbol); cell(row, short(a.kind, "MARKET_ALERT_KIND_")); cell(row, severity, "sev-" + severity);
    cell(row, a.valuePercent ? a.valuePercent + " %" : "—"); cell(row, a.message);
  }
  if (!(guards.marketAlerts || []).length) cell(alerts.insertRow(), "No market alerts").colSpan = 5;
}

// The countdown from the absolute liquidation time, by this browser's clock.
function countdown(d) {
  if (!d.liquidationTime) return "—";
  const left = Math.max(0, (new Date(d.liquidationTime) - Date.now()) / 1000);
  return left > 0 ? left.toFixed(0) + " s" : "due now";
}

function showError(e) {
  const box = $("error");
  box.hidden = false;
  text(box, "Cannot load the account: " + e.message);
  if (e.status === 401 || e.status === 403) {
    $("verdict").className = "verdict unknown";
    text($("verdict-text"), "Not signed in");
  }
}

// Reconciliation status and positions (what events change, and prices).
async function refresh() {
  if (!state.token) return;
  const base = `/v1/users/${encodeURIComponent(state.user || "me")}`;
  try {
    const [recon, positions] = await Promise.all([
      api(`${base}/reconciliationStatus?recentEventsLimit=10`),
      api(`${base}/positions?pageSize=200`),
    ]);
    $("error").hidden = true;
    pairs($("recon"), [
      ["State", short(recon.state, "RECONCILIATION_STATE_")],
      ["Last sync", time(recon.lastSyncTime)],
      ["Syncs", recon.totalSyncs],
      ["Open positions", recon.openPositionsCount],
      ["Matched", recon.matchedPositionsCount],
      ["Divergences", recon.divergencesCount],
    ]);
    const events = $("events");
    events.replaceChildren();
    for (const e of recon.recentEvents || []) {
      const row = events.insertRow();
      cell(row, time(e.occurredTime)); cell(row, short(e.eventType, "EVENT_TYPE_")); cell(row, e.symbol); cell(row, e.message);
    }
    const body = $("positions");
    body.replaceChildren();
    for (const p of positions.positions || []) {
      const row = body.insertRow();
      cell(row, p.symbol); cell(row, short(p.side, "SIDE_")); cell(row, p.volume); cell(row, p.entryPrice);
      cell(row, p.currentPrice || "—");
      cell(row, p.unrealizedPnl || p.pnlUnavailableReason || "—", signed(p.unrealizedPnl));
      cell(row, p.unrealizedPnlPercent ? p.unrealizedPnlPercent + " %" : "—", signed(p.unrealizedPnlPercent));
      cell(row, p.matched ? "yes" : "NO");
    }
    if (!(positions.positions || []).length) cell(body.insertRow(), "No open positions").colSpan = 8;
    text($("totals"), positions.totalUnrealizedPnl
      ? `— total P&L ${positions.totalUnrealizedPnl} ${positions.accountCurrency} (${positions.totalUnrealizedPnlPercent} %), ${positions.totalCount} open`
      : positions.totalUnavailableReason || "");
  } catch (e) {
    showError(e);
  }
}

// Coalesces a burst of events (a sync writes several) into one re-read.
function refreshSoon() {
  clearTimeout(state.pending);
  state.pending = setTimeout(refresh, 150);
}

// A live stream of `path`, calling onMessage(kind, message). EventSource reconnects by itself (resuming with
// Last-Event-ID) after a network error or when the server ends the stream. When it gives up (the server refused
// the start: 401, 403, or 410 for a resume point that is gone), one plain read says whether the token is the
// problem; if not, the stream starts again from now.
function follow(path, check, kinds, onMessage) {
  const url = path + (path.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(state.token);
  let source = new EventSource(url);
  let retry = null;
  let closed = false;
  const entry = { close: () => { closed = true; clearTimeout(retry); source.close(); } };
  const attach = () => {
    for (const kind of kinds) {
      source.addEventListener(kind, (e) => {
        $("live").textContent = "● live updates";
        onMessage(kind, JSON.parse(e.data));
      });
    }
    source.addEventListener("error", async (e) => {
      $("live").textContent = "reconnecting…";
      if (e.data) return; // the server ended the stream with a status; EventSource resumes
      if (source.readyState !== EventSource.CLOSED || closed) return;
      try {
        await api(check);
        retry = setTimeout(() => {
          if (closed) return;
          source = new EventSource(url);
          attach();
        }, 2000);
      } catch (err) {
        showError(err);
        $("live").textContent = "";
      }
    });
  };
  attach();
  state.streams.push(entry);
}

function start() {
  clearInterval(state.timer);
  clearInterval(state.poll);
  for (const stream of state.streams) stream.close();
  state.streams = [];
  const base = `/v1/users/${encodeURIComponent(state.user || "me")}`;
  refresh();
  follow(`${base}/guardStatus:watch`, `${base}/guardStatus`, ["update"], (_, m) => {
    $("error").hidden = true;
    showGuards(m.update.status);
    text($("refreshed"), "updated " + new Date().toLocaleTimeString());
  });
  follow(`${base}/reconciliationEvents:watch`, `${base}/guardStatus`, ["event"], () => refreshSoon());
  // Prices move without events; the countdown ticks here.
  state.timer = setInterval(() => {
    if (state.guards) showGuards(state.guards);
  }, 1000);
  state.poll = setInterval(refresh, 10000);
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const demo = $("demo-user").value;
  state.token = (demo || $("token").value).trim().replace(/^Bearer\s+/i, "");
  state.user = $("user").value.trim() || "me";
  sessionStorage.setItem("tm-token", state.token);
  sessionStorage.setItem("tm-user", state.user);
  start();
});

// In the demo, the server lists demo users with ready-made tokens; elsewhere this answers 404.
fetch("/page/demo-users.json").then((r) => (r.ok ? r.json() : [])).then((users) => {
  for (const u of users) {
    const option = document.createElement("option");
    option.value = u.token;
    option.textContent = u.label;
    $("demo-user").append(option);
  }
}).catch(() => {});

$("user").value = state.user;
if (state.token) start();
