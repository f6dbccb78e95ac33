// Opens a node's dashboard (/dashboard) in headless Chromium (Debian's, driven
// by puppeteer-core), waits for it to show what is asked, prints what it shows
// as one JSON line and saves a screenshot (1366x900 viewport, whole page).
//   node dashboard.js URL SCREENSHOT [--wait=peer,transfer,quota,chart,session | --wait=auth]
//                     [--settle=MS] [--chromium=PATH] [--timeout=MS]
// --wait: after body[data-ready=true], until there is at least one peer row,
// one transfer with progress, one quota bar with use, a chart with nonzero
// data, one session row; "auth" waits for the "needs the token" message
// instead. --settle: then watch the page update for that long more (the chart
// gathers a few more samples) before reading and saving it. Every wait has a deadline (--timeout, default 20000 ms each); on a
// missed one the summary is still printed and saved, with "error" set, and the
// exit status is 1.
const fs = require("fs");
const path = require("path");
const puppeteer = require("puppeteer-core");


function parseArgs(argv) {
  const opts = { wait: [], timeout: 20000, settle: 0, chromium: process.env.CHROMIUM || null };
  const positional = [];
  for (const arg of argv) {
    if (arg.startsWith("--wait=")) opts.wait = arg.slice(7).split(",").filter(Boolean);
    else if (arg.startsWith("--timeout=")) opts.timeout = Number(arg.slice(10));
    else if (arg.startsWith("--settle=")) opts.settle = Number(arg.slice(9));
    else if (arg.startsWith("--chromium=")) opts.chromium = arg.slice(11);
    else positional.push(arg);
  }
  if (positional.length !== 2) {
    console.error("usage: node dashboard.js URL SCREENSHOT [--wait=...] [--settle=MS] [--chromium=PATH] [--timeout=MS]");
    process.exit(2);
  }
  [opts.url, opts.screenshot] = positional;
  opts.chromium = opts.chromium || findChromium();
  return opts;
}

function findChromium() {
  for (const dir of (process.env.PATH || "").split(path.delimiter)) {
    for (const name of ["chromium", "chromium-browser", "google-chrome"]) {
      const candidate = path.join(dir, name);
      if (fs.existsSync(candidate)) return candidate;
    }
  }
  return "/usr/bin/chromium";
}

// Conditions, evaluated in the page (each returns true once met).
const CONDITIONS = {
  ready: () => document.body.dataset.ready === "true",
  live: () => document.body.dataset.ready === "true" && document.body.dataset.state === "ok",
  auth: () => document.body.dataset.state === "auth" && !document.getElementById("auth-needed").hidden,
  peer: () => document.querySelectorAll("#peers tr[data-peer-id]").length > 0,
  transfer: () =>
    Array.from(document.querySelectorAll("#transfers .transfer[data-hash]")).some((t) => {
      const p = parseFloat(t.dataset.progress);
      return p > 0 && p < 100 && t.querySelector(".share") !== null;
    }),
  quota: () =>
    Array.from(document.querySelectorAll("#quotas .window[data-bytes-used]")).some(
      (w) => Number(w.dataset.bytesUsed) > 0,
    ),
  chart: () =>
    Number(document.getElementById("throughput").dataset.maxRate) > 0 &&
    document.querySelectorAll("#throughput-chart path.series").length > 0,
  session: () => document.querySelectorAll("#sessions tr[data-session-id]").length > 0,
};

// What the page shows, read from the DOM as a person would see it.
function summarise() {
  const txt = (node) => (node ? node.textContent.trim() : null);
  const byId = (id) => document.getElementById(id);
  const rows = (sel, f) => Array.from(document.querySelectorAll(sel)).map(f);
  return {
    url: location.href,
    title: document.title,
    state: document.body.dataset.state,
    ready: document.body.dataset.ready === "true",
    authMessage: byId("auth-needed").hidden ? null : txt(byId("auth-needed")),
    errorMessage: byId("fetch-error").hidden ? null : txt(byId("fetch-error")),
    tokenInSessionStorage: Object.keys(sessionStorage).length > 0,
    header: {
      identity: txt(byId("identity")),
      identityFull: byId("identity").dataset.full || null,
      identityTitle: byId("identity").title,
      peerId: txt(byId("peer-id")),
      peerIdFull: byId("peer-id").dataset.full || null,
      version: txt(byId("version")),
      uptime: txt(byId("uptime")),
      health: txt(byId("health")),
      healthReady: byId("health").dataset.ready,
      live: txt(byId("live")),
    },
    throughput: {
      samples: Number(byId("throughput").dataset.samples),
      maxRate: Number(byId("throughput").dataset.maxRate),
      series: document.querySelectorAll("#throughput-chart path.series").length,
      axisLabels: rows("#throughput-chart text", (t) => t.textContent),
      legend: rows("#throughput-legend .item", (i) => i.textContent.trim()),
    },
    storage: txt(byId("storage-body")),
    peers: rows("#peers tr[data-peer-id]", (r) => ({
      peerId: r.dataset.peerId,
      shown: txt(r.querySelector(".peer")),
      availability: txt(r.querySelector(".availability")),
      latency: txt(r.querySelector(".latency")),
      bandwidth: txt(r.querySelector(".bandwidth")),
      received: txt(r.querySelector(".received")),
    })),
    peersEmpty: txt(document.querySelector("#peers .empty")),
    transfers: rows("#transfers .transfer[data-hash]", (t) => ({
      contentHash: t.dataset.hash,
      shown: txt(t.querySelector(".hash")),
      progress: t.dataset.progress === "" ? null : Number(t.dataset.progress),
      progressText: txt(t.querySelector(".pct")),
      rate: txt(t.querySelector(".rate")),
      sources: txt(t.querySelector(".sources")),
      shares: Array.from(t.querySelectorAll(".share")).map((s) => ({ source: s.dataset.source, text: s.textContent.trim() })),
    })),
    transfersEmpty: txt(document.querySelector("#transfers .empty")),
    sessions: rows("#sessions tr[data-session-id]", (r) => ({
      sessionId: r.dataset.sessionId,
      cells: Array.from(r.cells).map((c) => c.textContent.trim()),
    })),
    sessionsEmpty: txt(document.querySelector("#sessions .empty")),
    quotas: rows("#quotas .quota[data-receipt-id]", (q) => ({
      receiptId: q.dataset.receiptId,
      policy: txt(q.querySelector(".policy")),
      windows: Array.from(q.querySelectorAll(".window")).map((w) => ({
        window: w.dataset.window,
        bytesUsed: Number(w.dataset.bytesUsed),
        fraction: w.dataset.fraction === "unlimited" ? "unlimited" : Number(w.dataset.fraction),
        text: txt(w.querySelector(".text")),
      })),
    })),
    quotasEmpty: txt(document.querySelector("#quotas-body .empty")),
    decisions: rows("#quota-decisions .chip", (c) => ({ reason: c.dataset.reason, text: c.textContent.trim() })),
    replication: txt(byId("replication-body")),
  };
}

(async () => {
  const opts = parseArgs(process.argv.slice(2));
  const want = opts.wait.includes("auth") ? ["auth"] : ["ready", ...opts.wait];
  // The whole run, whatever hangs: every wait's deadline, the settling, and launching and closing.
  const watchdogMs = opts.timeout * (want.length + 2) + opts.settle + 30000;
  setTimeout(() => {
    console.error(`dashboard.js: gave up after ${watchdogMs} ms`);
    process.exit(3);
  }, watchdogMs).unref();
  const browser = await puppeteer.launch({
    executablePath: opts.chromium,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"],
    timeout: opts.timeout,
  });
  let error = null;
  let summary = null;
  const pageErrors = [];
  try {
    const page = await browser.newPage();
    page.setDefaultTimeout(opts.timeout);
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    await page.setViewport({ width: 1366, height: 900 });
    await page.goto(opts.url, { waitUntil: "domcontentloaded", timeout: opts.timeout });
    for (const name of want) {
      const condition = CONDITIONS[name];
      if (!condition) throw new Error(`unknown condition ${name}`);
      try {
        await page.waitForFunction(condition, { timeout: opts.timeout, polling: 200 });
      } catch (e) {
        error = `timed out waiting for ${name}`;
        break;
      }
    }
    if (!error && want.length > 1) {
      await new Promise((r) => setTimeout(r, Math.min(opts.settle, opts.timeout) + 300)); // and let the last update paint
      // Still showing data after those updates (a live page, not a stale one).
      try {
        await page.waitForFunction(CONDITIONS.live, { timeout: opts.timeout, polling: 200 });
      } catch (e) {
        error = "the page stopped showing data while settling";
      }
    }
    summary = await page.evaluate(summarise);
    await page.screenshot({ path: opts.screenshot, fullPage: true });
  } catch (e) {
    error = error || String(e);
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify({ ...summary, pageErrors, error }));
  process.exit(error ? 1 : 0);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
