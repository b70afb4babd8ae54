// Flywheel dashboard: reads /v1/models, /v1/models/{name}/dashboard,
// /explain and /features and draws them. No framework, no CDN: everything here is embedded in the binary.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2c6fbb", "#1f8a4c", "#8e44ad", "#c0392b", "#d68910", "#16a085", "#7f8c8d", "#2c3e50"];
const MARKERS = { promoted: "#1f8a4c", rolled_back: "#c0392b", canary_started: "#d68910", canary_ended: "#7f8c8d" };

const state = { models: [], data: null, timer: null };

function key() { return sessionStorage.getItem("flywheel-key") || ""; }

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (key()) headers["Authorization"] = "Bearer " + key();
  // Without keys the server takes a POST, PUT or DELETE only as JSON, even bodiless.
  if (method !== "GET") headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await resp.text();
  let json = null;
  try { json = JSON.parse(text); } catch (e) { /* not JSON */ }
  if (!resp.ok) {
    const msg = json && json.error ? json.error.message || JSON.stringify(json.error) : text;
    throw new Error(method + " " + path + ": " + resp.status + " " + msg);
  }
  return json;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

const fmt = (x, d = 3) => (x === undefined || x === null || isNaN(x)) ? "–" : Number(x).toFixed(d);
const time = (ms) => new Date(ms).toISOString().slice(11, 19);
const dateTime = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 19);

function showError(err) {
  const box = $("error");
  box.hidden = !err;
  box.textContent = err ? String(err.message || err) : "";
  if (err) document.body.dataset.state = "error";
}

// lineChart draws series [{label, color, dashed, points: [{t, y}]}] and
// markers [{t, label, color}] into the element with id, y in [yMin, yMax].
function lineChart(id, series, markers, from, to, yMax, yMin = 0) {
  const W = 1000, H = 280, L = 44, R = 12, T = 16, B = 26;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  const x = (t) => L + (W - L - R) * (to > from ? (t - from) / (to - from) : 0);
  const y = (v) => T + (H - T - B) * (1 - Math.min(Math.max((v - yMin) / (yMax - yMin), 0), 1));
  for (let i = 0; i <= 4; i++) {
    const v = yMin + (yMax - yMin) * i / 4;
    root.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "axis" }));
    root.append(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v, 2)));
  }
  for (let i = 0; i <= 5; i++) {
    const t = from + (to - from) * i / 5;
    root.append(svg("text", { x: x(t), y: H - 8, "text-anchor": i === 0 ? "start" : i === 5 ? "end" : "middle" }, time(t)));
  }
  for (const m of markers) {
    if (m.t < from || m.t > to) continue;
    root.append(svg("line", { x1: x(m.t), x2: x(m.t), y1: T, y2: H - B, stroke: m.color, "stroke-width": 1.5, "stroke-dasharray": "3 3", "data-marker": m.id }));
    root.append(svg("text", { x: x(m.t) + 3, y: T + 10 + (m.row || 0) * 12, class: "marker-label", fill: m.color, style: `fill:${m.color}` }, m.label));
  }
  for (const s of series) {
    if (s.points.length === 0) continue;
    const d = s.points.map((p, i) => (i ? "L" : "M") + x(p.t).toFixed(1) + " " + y(p.y).toFixed(1)).join(" ");
    root.append(svg("path", { d, fill: "none", stroke: s.color, "stroke-width": s.dashed ? 1.5 : 2.2,
      "stroke-dasharray": s.dashed ? "6 4" : "none", "data-series": s.id }));
    if (s.points.length === 1) root.append(svg("circle", { cx: x(s.points[0].t), cy: y(s.points[0].y), r: 3, fill: s.color }));
  }
  $(id).replaceChildren(root);
}

function legend(id, items) {
  $(id).replaceChildren(...items.map((it) => {
    const sw = el("span", { class: "swatch" + (it.dashed ? " dashed" : "") });
    sw.style.background = it.color; sw.style.borderColor = it.color;
    const attrs = { class: "item" };
    for (const [k, v] of Object.entries(it.data || {})) attrs["data-" + k] = v;
    return el("span", attrs, sw, it.text);
  }));
}

function stat(label, value, cls, data) {
  const attrs = { class: "stat " + (cls || "") };
  if (data) attrs["data-stat"] = data;
  return el("div", attrs, el("div", { class: "label", text: label }), el("div", { class: "value", text: value }));
}

// lateText is the late feedback of the window: how many, their share of the
// window's feedback, and how many of them re-scored their decision.
function lateText(l) {
  if (!l || !l.feedback) return "none";
  return `${l.late} (${fmt(l.late_share * 100, 1)}%), ${l.rescored} rescored`;
}

function render(d) {
  const m = d.model, o = d.data.overview, rep = d.replica || {};
  const cfg = m.config || {};
  const estimator = (cfg.Promote && cfg.Promote.Estimator) || "snips";
  const lag = d.data.ingest_lag || {};
  const lagTotal = Object.values(lag).reduce((a, b) => a + b, 0);
  const canary = m.canary_version ? `v${m.canary_version} (${Math.round(((cfg.Promote && cfg.Promote.Canary && cfg.Promote.Canary.Share) || 0) * 100)}%)` : "none";
  $("status").replaceChildren(
    stat("champion", "v" + m.live_version, "good", "champion"),
    stat("canary", canary, m.canary_version ? "warn" : "", "canary"),
    stat("decisions ingested / s", fmt(o.flow.decisions_per_second, 1), "", "decisions-rate"),
    stat("feedback ingested / s", fmt(o.flow.feedback_per_second, 1), "", "feedback-rate"),
    stat("newest decision", o.flow.newest_decision_ms ? fmt(o.flow.newest_age_seconds, 1) + " s ago" : "none", o.flow.newest_age_seconds > 300 ? "warn" : "", "newest"),
    stat("ingest lag (records)", d.data.ingest_lag_error ? "unknown" : String(lagTotal), d.data.ingest_lag_error ? "bad" : lagTotal > 10000 ? "warn" : "", "lag"),
    stat("spool on this replica", fmt((rep.spool_pending_bytes || 0) / 1024, 1) + " KiB", rep.spool_pending_bytes > 0 ? "warn" : "", "spool"),
    stat("Kafka errors (this replica)", String(rep.kafka_write_errors || 0), rep.kafka_write_errors > 0 ? "bad" : "", "kafka-errors"),
    stat("events refused", String(rep.events_refused || 0), rep.events_refused > 0 ? "bad" : "", "refused"),
    stat("late feedback", lateText(o.late_feedback), o.late_feedback && o.late_feedback.late_share > 0.1 ? "warn" : "", "late-feedback"),
  );
  $("status").querySelector('[data-stat="late-feedback"]').title =
    "feedback received in the window after its decision's reward window; rescored: within reward.late_window, so counted in the decision's reward";
  if (d.data.ingest_lag_error) $("status").lastChild.title = d.data.ingest_lag_error;

  // Reward over time, one line per version and variant, references dashed.
  const from = o.from, to = o.to;
  const series = [], items = [];
  o.series.forEach((s, i) => {
    const color = COLORS[(s.version - 1) % COLORS.length];
    const id = `v${s.version}-${s.variant}`;
    series.push({ id, color, dashed: s.variant === "canary", points: s.points.map((p) => ({ t: p.t + o.bucket_seconds * 500, y: p.reward_rate })) });
    items.push({ color, dashed: s.variant === "canary", text: `v${s.version} ${s.variant}: ${fmt(s.reward_rate)} ± ${fmt(s.stderr)} (${s.decisions} decisions)`,
      data: { series: id, version: s.version, variant: s.variant, rate: fmt(s.reward_rate), decisions: s.decisions } });
  });
  let yMax = 0.1;
  for (const s of o.series) for (const p of s.points) yMax = Math.max(yMax, p.reward_rate);
  for (const r of o.references) {
    const color = r.name === "random" ? "#95a5a6" : "#34495e";
    series.push({ id: "ref-" + r.name, color, dashed: true, points: [{ t: from, y: r.value }, { t: to, y: r.value }] });
    items.push({ color, dashed: true, text: `${r.name} (${r.source || "reference"}): ${fmt(r.value)}`, data: { reference: r.name, rate: fmt(r.value) } });
    yMax = Math.max(yMax, r.value);
  }
  yMax = Math.min(Math.ceil(yMax * 1.15 * 10) / 10, Math.max(1, yMax));
  const markers = [];
  const moves = (d.data.deployments || []).slice().reverse();
  moves.forEach((mv, i) => {
    const t = Date.parse(mv.ts);
    let kind = mv.alias === "canary" ? (mv.version ? "canary_started" : "canary_ended") : (mv.actor === "guardrail" || /rollback|roll back/i.test(mv.reason) || (mv.version < mv.previous_version) ? "rolled_back" : "promoted");
    const label = { promoted: `v${mv.version} champion`, rolled_back: `rollback to v${mv.version}`, canary_started: `v${mv.version} canary`, canary_ended: `canary v${mv.previous_version} ended` }[kind];
    markers.push({ t, label, color: MARKERS[kind], id: `${kind}-${mv.version || mv.previous_version}`, row: i % 3 });
  });
  lineChart("reward-chart", series, markers, from, to, yMax);
  legend("reward-legend", items);
  $("reward-note").textContent = `closed decisions, ${o.bucket_seconds} s buckets; markers: promotions, canaries, rollbacks`;

  // Feedback join rate, defaulted rewards, exploration share.
  const q = (f) => o.quality.map((p) => ({ t: p.t + o.bucket_seconds * 500, y: p[f] }));
  const avg = (f) => { let n = 0, s = 0; for (const p of o.quality) { n += p.decisions; s += p[f] * p.decisions; } return n ? s / n : NaN; };
  const qs = [
    { id: "join", color: "#2c6fbb", points: q("join_rate"), name: "feedback join rate", f: "join_rate" },
    { id: "defaulted", color: "#c0392b", points: q("defaulted_share"), name: "defaulted rewards", f: "defaulted_share" },
    { id: "explored", color: "#d68910", points: q("explored_share"), name: "exploration share", f: "explored_share" },
  ];
  lineChart("quality-chart", qs, [], from, to, 1);
  legend("quality-legend", qs.map((s) => ({ color: s.color, text: `${s.name}: ${fmt(avg(s.f))}`, data: { quality: s.id, rate: fmt(avg(s.f)) } })));

  renderLift(o, from, to);
  renderSlots(o, from, to);

  // Versions with their online reward in the window and the admin actions.
  const online = {};
  for (const s of o.series) {
    const v = online[s.version] || (online[s.version] = { n: 0, sum: 0 });
    v.n += s.decisions; v.sum += s.reward_rate * s.decisions;
  }
  const vt = $("versions");
  vt.replaceChildren(el("tr", {}, ...["version", "role", "created", "decisions in window", "reward rate", "sha256", ""].map((h) => el("th", { text: h }))));
  for (const v of d.data.versions || []) {
    const role = v.version === m.live_version ? "champion" : v.version === m.canary_version ? "canary" : "";
    const on = online[v.version];
    const promote = el("button", { "data-admin": "", text: "promote" });
    promote.onclick = () => act(`Make v${v.version} the champion of ${m.name}?`, "POST", `/v1/models/${m.name}/promote`, { version: v.version, reason: "promoted from the dashboard" });
    const can = el("button", { "data-admin": "", text: "canary" });
    can.onclick = () => act(`Serve v${v.version} to the canary share of users of ${m.name}?`, "POST", `/v1/models/${m.name}/canary`, { version: v.version, reason: "canary started from the dashboard" });
    vt.append(el("tr", { "data-version": v.version },
      el("td", { text: "v" + v.version }),
      el("td", {}, role ? el("span", { class: "badge " + role, text: role }) : ""),
      el("td", { text: dateTime(Date.parse(v.created_at)) }),
      el("td", { text: on ? String(on.n) : "0" }),
      el("td", { "data-rate": on ? fmt(on.sum / on.n) : "", text: on ? fmt(on.sum / on.n) : "–" }),
      el("td", { text: (v.sha256 || "").slice(0, 12) }),
      el("td", {}, role ? "" : promote, " ", role ? "" : can)));
  }

  // Retrain runs with the evaluation of candidate against champion.
  const rt = $("runs");
  // rankers: the off-policy estimate promotion looks at; classifiers: log loss (lower is better)
  const metric = m.kind === "classifier" ? "log_loss" : estimator;
  const metricName = m.kind === "classifier" ? "log loss" : estimator;
  rt.replaceChildren(el("tr", {}, ...["started", "outcome", "candidate", "rows (train / holdout)", `candidate ${metricName}`, `champion ${metricName}`, "reason"].map((h) => el("th", { text: h }))));
  const est = (e) => e ? `${fmt(e.value)} [${fmt(e.lower)}, ${fmt(e.upper)}]` : "–";
  // a run judged on pages of slots: the page's estimate (what the gate judged), then each slot's
  const bySlot = (c, side) => c && c.page ? [`page ${est(c.page[side][metric])}`, ...(c.slots || []).map((s) => `${s.slot} ${est(s[side][metric])}`)].join("; ") : "";
  // consecutive skipped runs collapse into one row: the newest, with how many
  const runs = [];
  for (const r of o.runs) {
    const prev = runs[runs.length - 1];
    if (prev && prev.outcome === "skipped" && r.outcome === "skipped") { prev.times = (prev.times || 1) + 1; prev.since = r.t; continue; }
    runs.push(Object.assign({}, r));
  }
  for (const r of runs) {
    const c = r.comparison;
    rt.append(el("tr", { "data-run": r.outcome },
      el("td", { text: dateTime(r.t) }),
      el("td", {}, el("span", { class: "badge " + r.outcome, text: r.times ? `${r.outcome} ×${r.times}` : r.outcome })),
      el("td", { text: r.version ? `v${r.version} vs v${r.champion}` : `– (champion v${r.champion})` }),
      el("td", { text: r.train_rows ? `${r.train_rows} / ${r.holdout_rows}` : "–" }),
      el("td", { text: bySlot(c, "candidate") || (c && c.candidate ? est(c.candidate[metric]) : "–") }),
      el("td", { text: bySlot(c, "champion") || (c && c.champion ? est(c.champion[metric]) : "–") }),
      el("td", { class: "reason", text: r.reason })));
  }

  const dt = $("deployments");
  dt.replaceChildren(el("tr", {}, ...["when", "alias", "version", "previous", "by", "reason"].map((h) => el("th", { text: h }))));
  for (const mv of d.data.deployments || []) {
    dt.append(el("tr", {}, el("td", { text: dateTime(Date.parse(mv.ts)) }), el("td", { text: mv.alias }),
      el("td", { text: mv.version ? "v" + mv.version : "none" }), el("td", { text: mv.previous_version ? "v" + mv.previous_version : "none" }),
      el("td", { text: mv.actor }), el("td", { class: "reason", text: mv.reason })));
  }
  $("updated").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
  document.body.dataset.state = "ready";
}

// The lift over the control group (promote.control), per bucket with its
// interval, and over the window; hidden without control decisions.
function renderLift(o, from, to) {
  const l = o.lift;
  $("lift-section").hidden = !l;
  if (!l) return;
  const mid = (p) => p.t + o.bucket_seconds * 500;
  const series = [
    { id: "lift", color: "#1f8a4c", points: l.points.map((p) => ({ t: mid(p), y: p.lift })) },
    { id: "lift-lower", color: "#1f8a4c", dashed: true, points: l.points.map((p) => ({ t: mid(p), y: p.lower })) },
    { id: "lift-upper", color: "#1f8a4c", dashed: true, points: l.points.map((p) => ({ t: mid(p), y: p.upper })) },
    { id: "lift-zero", color: "#95a5a6", dashed: true, points: [{ t: from, y: 0 }, { t: to, y: 0 }] },
  ];
  let lo = 0, hi = 0.1;
  for (const p of l.points) { lo = Math.min(lo, p.lower); hi = Math.max(hi, p.upper); }
  const pad = (hi - lo) * 0.1;
  lineChart("lift-chart", series, [], from, to, hi + pad, lo - pad);
  const c = Math.round(l.confidence * 100);
  const t = l.total;
  $("lift-note").textContent = `treated (every live version) minus control, ${c}% intervals dashed, ${o.bucket_seconds} s buckets`;
  legend("lift-legend", [{ color: "#1f8a4c", text: t ?
    `over the window: ${fmt(t.lift)} [${fmt(t.lower)}, ${fmt(t.upper)}] (${t.relative ? (t.relative >= 0 ? "+" : "") + fmt(t.relative * 100, 1) + "%" : "–"}), ${t.treated} treated, ${t.control} control decisions` :
    "over the window: not yet two closed decisions on each side", data: t ? { lift: fmt(t.lift), lower: fmt(t.lower), upper: fmt(t.upper) } : {} }]);
}

// Reward by slot of a multi-slot model's pages, and the page's (the sum over
// its slots); hidden for a model without pages.
function renderSlots(o, from, to) {
  const slots = o.slots || [];
  $("slots-section").hidden = slots.length === 0;
  if (!slots.length) return;
  let yMax = 0.1;
  const series = [], items = [];
  slots.forEach((s, i) => {
    const page = s.slot === "";
    const color = page ? "#2c3e50" : COLORS[i % COLORS.length];
    const id = page ? "page" : "slot-" + s.slot;
    for (const p of s.points) yMax = Math.max(yMax, p.reward_rate);
    series.push({ id, color, dashed: page, points: s.points.map((p) => ({ t: p.t + o.bucket_seconds * 500, y: p.reward_rate })) });
    items.push({ color, dashed: page, text: `${page ? "page (sum over slots)" : "slot " + s.slot}: ${fmt(s.reward_rate)} ± ${fmt(s.stderr)} (${s.decisions} ${page ? "pages" : "decisions"})`,
      data: { slot: page ? "page" : s.slot, rate: fmt(s.reward_rate), decisions: s.decisions } });
  });
  lineChart("slots-chart", series, [], from, to, Math.ceil(yMax * 1.15 * 10) / 10);
  legend("slots-legend", items);
}

const pct = (x) => (x === undefined || x === null) ? "–" : (100 * x).toFixed(1) + "%";

// What the champion learned: its features and crosses with the largest
// effect, by their readable names; fetched once per version shown.
async function refreshExplain(name, version) {
  const k = name + "@" + version;
  if (state.explained === k) return;
  try {
    renderExplain(await api("GET", `/v1/models/${encodeURIComponent(name)}/explain?version=${version}&top=20`));
    state.explained = k;
  } catch (err) {
    $("explain-note").textContent = String(err.message || err);
    $("explain").replaceChildren();
  }
}

function renderExplain(x) {
  $("explain-note").textContent = `v${x.version}: ${x.nonzero_weights} nonzero weights, trained on ${x.trained} examples; ` +
    (x.dictionary ? `${x.names} names kept of at most ${x.name_limit}` : "trained before names were kept, so weights show as hashed indices");
  const top = x.top || [];
  const most = top.length ? top[0].effect : 1;
  const t = $("explain");
  t.replaceChildren(el("tr", {}, ...["rank", "feature or cross", "effect", "weight", "uses in training"].map((h) => el("th", { text: h }))));
  top.forEach((e, i) => {
    const names = e.names && e.names.length ? e.names : [{ name: "#" + e.index, uses: 0 }];
    const bar = el("span", { class: "bar" + (e.weight < 0 ? " neg" : "") });
    bar.style.width = Math.max(1, Math.round(160 * e.effect / most)) + "px";
    t.append(el("tr", { "data-effect": fmt(e.effect, 4), "data-name": names[0].name },
      el("td", { text: String(i + 1) }),
      el("td", {}, names[0].name, names.length > 1 ? el("span", { class: "muted", text: ` (and ${names.length - 1} more on the same index)` }) : null),
      el("td", {}, bar, fmt(e.effect, 4)),
      el("td", { text: (e.weight >= 0 ? "+" : "") + fmt(e.weight, 4) }),
      el("td", { text: names[0].uses ? String(names[0].uses) : "–" })));
  });
}

// Feature health: this replica's live traffic against the champion's
// training window; a feature missing now but present in training comes
// first, marked, then features training did not have.
async function refreshFeatures(name) {
  try {
    renderFeatures(await api("GET", `/v1/models/${encodeURIComponent(name)}/features`));
  } catch (err) {
    $("features-note").textContent = String(err.message || err);
    $("features").replaceChildren();
  }
}

function renderFeatures(r) {
  const sampled = `${r.decisions_sampled} decisions sampled (1 in ${r.sample_every}) in the last ${r.window}`;
  $("features-note").textContent = r.training ? `v${r.version}: ${sampled}, against its ${r.training.examples} training examples` :
    `v${r.version} was trained without a feature profile: ${sampled}, nothing to compare with`;
  const rows = r.features.slice().sort((a, b) => (b.missing - a.missing) || (b.new - a.new) || a.feature.localeCompare(b.feature));
  const t = $("features");
  t.replaceChildren(el("tr", {}, ...["feature", "decisions carrying it", "in training", "values never seen in training", "numbers out of training's range", "range now", "training range (p1 – p99)"].map((h) => el("th", { text: h }))));
  const range = (lo, hi) => `${fmt(lo, 2)} – ${fmt(hi, 2)}`;
  for (const f of rows) {
    const badge = f.missing ? el("span", { class: "badge rejected", text: "missing" }) : f.new ? el("span", { class: "badge canary", text: "new" }) : null;
    const tr = f.training_range;
    t.append(el("tr", { class: f.missing ? "missing" : f.new ? "new" : "", "data-feature": f.feature, "data-presence": fmt(f.presence),
      "data-training-presence": fmt(f.training_presence), "data-missing": String(f.missing) },
      el("td", {}, f.feature, " ", badge),
      el("td", { text: pct(f.presence) }),
      el("td", { text: pct(f.training_presence) }),
      el("td", { text: f.values ? `${pct(f.unseen_value_ratio)} of ${f.values}` : "–" }),
      el("td", { text: f.numbers ? `${pct(f.out_of_range_ratio)} of ${f.numbers}` : "–" }),
      el("td", { text: f.numbers ? range(f.min, f.max) : "–" }),
      el("td", { text: tr ? `${range(tr.min, tr.max)} (${range(tr.p01, tr.p99)})` : "–" })));
  }
}

async function act(question, method, path, body) {
  if (!window.confirm(question + "\n\nThis needs an admin key.")) return;
  try {
    const out = await api(method, path, body);
    $("action-result").textContent = "done: " + JSON.stringify(out);
    refresh();
  } catch (err) {
    $("action-result").textContent = String(err.message || err);
  }
}

async function refresh() {
  const name = $("model").value;
  if (!name) return;
  try {
    const d = await api("GET", `/v1/models/${encodeURIComponent(name)}/dashboard?window=${$("window").value}`);
    state.data = d;
    showError(null);
    render(d);
    await Promise.all([refreshExplain(name, d.model.live_version), refreshFeatures(name)]);
  } catch (err) {
    showError(err);
  }
}

async function start() {
  $("key").value = key();
  $("key").onchange = () => { sessionStorage.setItem("flywheel-key", $("key").value); init(); };
  $("window").onchange = refresh;
  $("model").onchange = () => { location.hash = $("model").value; refresh(); };
  $("auto").onchange = schedule;
  $("retrain").onclick = () => act(`Retrain ${$("model").value} now?`, "POST", `/v1/models/${$("model").value}/retrain`, {});
  $("rollback").onclick = () => act(`Roll ${$("model").value} back to its previous champion?`, "POST", `/v1/models/${$("model").value}/rollback`, {});
  $("end-canary").onclick = () => act(`End the canary of ${$("model").value}?`, "DELETE", `/v1/models/${$("model").value}/canary`);
  await init();
  schedule();
}

async function init() {
  try {
    const out = await api("GET", "/v1/models");
    state.models = out.models || [];
    const sel = $("model");
    const want = location.hash.slice(1);
    sel.replaceChildren(...state.models.map((m) => el("option", { value: m.name, text: `${m.name} (${m.kind})` })));
    if (state.models.some((m) => m.name === want)) sel.value = want;
    await refresh();
  } catch (err) {
    showError(err);
  }
}

function schedule() {
  clearInterval(state.timer);
  if ($("auto").checked) state.timer = setInterval(refresh, 5000);
}

start();
