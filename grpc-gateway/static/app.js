// The status page: reads the public REST API with the pasted (or demo) bearer token every few seconds.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("tm-token") || "", user: sessionStorage.getItem("tm-user") || "me", timer: null };

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

async function refresh() {
  if (!state.token) return;
  const base = `/v1/users/${encodeURIComponent(state.user || "me")}`;
  try {
    const [recon, positions, guards] = await Promise.all([
      api(`${base}/reconciliationStatus?recentEventsLimit=10`),
      api(`${base}/positions?pageSize=200`),
      api(`${base}/guardStatus`),
    ]);
    $("error").hidden = true;
    showVerdict(guards);
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
    const d = guards.drawdown || {};
    pairs($("drawdown"), [
      ["Drawdown level", short(d.level, "DRAWDOWN_LEVEL_")],
      ["Drawdown", d.drawdownPercent ? d.drawdownPercent + " %" : "—"],
      ["Equity / peak", d.equity ? `${d.equity} / ${d.peakEquity} ${d.accountCurrency || ""}` : "—"],
      ["Thresholds", `${d.warningThresholdPercent} % warning, ${d.criticalThresholdPercent} % critical`],
      ["Close all (drawdown)", d.shouldCloseAll ? "YES" : "no"],
      ["Liquidation in", d.timeToLiquidation || "—"],
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
    text($("refreshed"), "updated " + new Date().toLocaleTimeString());
  } catch (e) {
    const box = $("error");
    box.hidden = false;
    text(box, "Cannot load the account: " + e.message);
    if (e.status === 401 || e.status === 403) {
      $("verdict").className = "verdict unknown";
      text($("verdict-text"), "Not signed in");
    }
  }
}

function start() {
  clearInterval(state.timer);
  refresh();
  state.timer = setInterval(refresh, 3000);
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
