// FastPubSub dashboard: polls /v1/mesh (schema in docs/api.md) and draws it. No dependencies;
// every text from the mesh goes into the DOM through textContent, never as HTML.
"use strict";
(() => {
  const NS = "http://www.w3.org/2000/svg";
  const POLL_MS = 1500;
  const MAX_ROWS = 60;
  const $ = (id) => document.getElementById(id);
  let mesh = null;
  let names = [];
  let pos = [];
  let pairs = new Map();
  let sel = { src: null, dst: null, user: false };
  const linkEls = new Map();
  const relayEls = new Map();
  let selectNames = "";

  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const svg = (tag, attrs) => {
    const e = document.createElementNS(NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  };
  const ms = (v) => (v === null || v === undefined ? "–" : v.toFixed(1) + " ms");
  const pct = (v) => (v * 100).toFixed(1) + " %";
  const num = (v) => (v === null || v === undefined ? "–" : v >= 100 ? Math.round(v).toString() : (+v.toFixed(1)).toString());
  const time = (t) => new Date(t).toISOString().slice(11, 19);
  const ago = (a) => (a < 1500 ? "now" : a < 60000 ? Math.round(a / 1000) + " s ago" : Math.round(a / 60000) + " min ago");

  function colour(rtt) {
    if (rtt < 50) return "#2ecc71";
    if (rtt < 120) return "#c3d72b";
    if (rtt < 200) return "#f1a10f";
    return "#e8433a";
  }

  // Equirectangular: x = lon + 180, y = 90 - lat; relays without coordinates line up at the bottom.
  function place(relays) {
    let unplaced = 0;
    return relays.map((r) =>
      r.lat === null || r.lon === null ? [8 + 10 * unplaced++, 150] : [r.lon + 180, 90 - r.lat]
    );
  }

  // One or two segments: the shorter way round, split at the map's edge.
  function segd(a, b) {
    const dx = b[0] - a[0];
    if (Math.abs(dx) <= 180) return `M${a[0]} ${a[1]}L${b[0]} ${b[1]}`;
    const s = dx > 0 ? -360 : 360;
    return `M${a[0]} ${a[1]}L${b[0] + s} ${b[1]}M${a[0] - s} ${a[1]}L${b[0]} ${b[1]}`;
  }

  function render() {
    names = mesh.relays.map((r) => r.name);
    pos = place(mesh.relays);
    pairs = new Map(mesh.pairs.map((p) => [p[0] + "," + p[1], p]));
    $("self").textContent = `served by ${mesh.self_name} · ${time(mesh.generated_at_ms)} UTC`;
    const links = mergeLinks();
    headline(links);
    drawLinks(links);
    drawRelays();
    if (!sel.user) autoSelect();
    pickers();
    drawPair(links);
    topSavings();
    eventsTable();
    changesTable();
    relayTable(links);
    document.body.dataset.ready = "1";
  }

  // Directed reports -> one entry per relay pair: up if either side says up, worst RTT/loss.
  function mergeLinks() {
    const m = new Map();
    for (const [from, to, isUp, rtt, , jitter, loss] of mesh.links) {
      const a = Math.min(from, to), b = Math.max(from, to), up = isUp === 1;
      const k = a + "," + b;
      const o = m.get(k);
      if (!o) m.set(k, { a, b, up, rtt: up ? rtt : null, loss, jitter });
      else {
        if (up) o.rtt = o.rtt === null ? rtt : Math.max(o.rtt, rtt);
        o.up = o.up || up;
        o.loss = Math.max(o.loss, loss);
        o.jitter = Math.max(o.jitter, jitter);
      }
    }
    return m;
  }

  function headline(links) {
    const h = mesh.headline;
    const set = (k, v) => (document.querySelector(`#headline [data-k="${k}"]`).textContent = v);
    set("share", h.compared ? pct(h.improved_share) : "–");
    set("share-detail", `${h.improved} of ${h.compared} pairs with a direct link (≥ ${h.min_saving_ms} ms and ≥ ${h.min_saving_ratio * 100} %)`);
    set("median", ms(h.median_saving_ms));
    set("median-detail", `${h.pairs} routed pairs`);
    const stale = mesh.relays.filter((r) => r.stale).length;
    set("relays", String(mesh.relays.length));
    set("relays-detail", stale ? `${stale} stale` : "all reporting");
    let up = 0;
    for (const l of links.values()) if (l.up) up++;
    set("links", `${up}/${links.size}`);
    set("links-detail", links.size - up ? `${links.size - up} down` : "all up");
    const w = mesh.webtransport;
    $("wt-card").hidden = !w;
    if (w) {
      set("wt", String(w.sessions));
      set("wt-detail", `${w.accepted} accepted · ${w.refused} refused · ${w.handshakes_refused} handshakes refused · ${w.deliveries_dropped} deliveries dropped`);
    }
  }

  function drawLinks(links) {
    const g = $("links");
    g.classList.toggle("dense", links.size > 300);
    const seen = new Set();
    for (const l of links.values()) {
      const key = names[l.a] + "|" + names[l.b];
      seen.add(key);
      let p = linkEls.get(key);
      if (!p) {
        p = svg("path", { "data-link": key });
        p.appendChild(svg("title", {}));
        g.appendChild(p);
        linkEls.set(key, p);
      }
      p.setAttribute("d", segd(pos[l.a], pos[l.b]));
      p.setAttribute("stroke", l.up ? colour(l.rtt) : "#777");
      p.classList.toggle("down", !l.up);
      p.classList.toggle("lossy", l.up && l.loss >= 0.01);
      p.firstChild.textContent = `${names[l.a]} – ${names[l.b]}: ${l.up ? ms(l.rtt) + ", loss " + pct(l.loss) + ", jitter " + ms(l.jitter) : "down"}`;
    }
    for (const [k, p] of linkEls) if (!seen.has(k)) { p.remove(); linkEls.delete(k); }
  }

  function drawRelays() {
    const g = $("relays-g");
    const labels = mesh.relays.length <= 30;
    const seen = new Set();
    mesh.relays.forEach((r, i) => {
      seen.add(r.name);
      let e = relayEls.get(r.name);
      if (!e) {
        const c = svg("circle", { r: "1.6", "data-relay": r.name });
        c.appendChild(svg("title", {}));
        c.addEventListener("click", () => clickRelay(r.name));
        const t = svg("text", {});
        g.append(c, t);
        e = { c, t };
        relayEls.set(r.name, e);
      }
      const [x, y] = pos[i];
      e.c.setAttribute("cx", x);
      e.c.setAttribute("cy", y);
      e.c.classList.toggle("self", r.is_self);
      e.c.classList.toggle("stale", r.stale);
      e.c.classList.toggle("sel", r.name === sel.src || r.name === sel.dst);
      e.c.firstChild.textContent = `${r.name} (${r.region}) · ${r.connections} conn · ${num(r.messages_in_per_s)} msg/s in`;
      e.t.setAttribute("x", x + 2.2);
      e.t.setAttribute("y", y + 1.1);
      e.t.textContent = labels || r.is_self || r.name === sel.src || r.name === sel.dst ? r.name : "";
    });
    for (const [k, e] of relayEls) if (!seen.has(k)) { e.c.remove(); e.t.remove(); relayEls.delete(k); }
  }

  function clickRelay(name) {
    sel.user = true;
    if (!sel.src || sel.dst || name === sel.src) { sel.src = name; sel.dst = null; }
    else sel.dst = name;
    render();
  }

  function pickers() {
    const key = names.join("\n");
    if (key !== selectNames) {
      selectNames = key;
      for (const id of ["src", "dst"]) {
        const s = $(id);
        s.replaceChildren(el("option", "", "—"));
        s.firstChild.value = "";
        for (const n of names) { const o = el("option", "", n); o.value = n; s.appendChild(o); }
      }
    }
    $("src").value = sel.src || "";
    $("dst").value = sel.dst || "";
  }

  function autoSelect() {
    let best = null;
    for (const p of mesh.pairs) if (p[7] !== null && (!best || p[7] > best[7])) best = p;
    if (best && best[7] > 0) { sel.src = names[best[0]]; sel.dst = names[best[1]]; }
    else { sel.src = null; sel.dst = null; }
  }

  function drawPair(links) {
    const g = $("route");
    g.replaceChildren();
    const info = $("pair-info");
    info.replaceChildren();
    delete info.dataset.saving;
    const s = names.indexOf(sel.src), d = names.indexOf(sel.dst);
    if (s < 0 || d < 0 || s === d) {
      info.textContent = s >= 0 ? `From ${sel.src}: now pick the destination.` : "Click two relays on the map, or pick them above.";
      return;
    }
    const l = links.get(Math.min(s, d) + "," + Math.max(s, d));
    if (l && l.up) g.appendChild(svg("path", { class: "direct", d: segd(pos[s], pos[d]) }));
    const p = pairs.get(s + "," + d);
    if (!p) {
      info.append(el("div", "", `${sel.src} has no route to ${sel.dst}.`));
      return;
    }
    const [, , via, complete, metric, pathRtt, direct, saving] = p;
    const path = complete ? [s, ...via, d] : [s, ...via];
    let dd = "";
    for (let i = 1; i < path.length; i++) dd += segd(pos[path[i - 1]], pos[path[i]]);
    g.appendChild(svg("path", { class: "path", d: dd }));
    info.dataset.path = path.map((i) => names[i]).join(">");
    const row = (k, v, cls) => { const r = el("div"); r.append(el("span", "", k + ": "), el("b", cls || "", v)); info.appendChild(r); };
    row("Path in use", path.map((i) => names[i]).join(" → ") + (complete ? "" : " … (incomplete)"));
    row("Path RTT", ms(pathRtt) + `  (metric ${ms(metric)}, ${path.length - 1} hop${path.length === 2 ? "" : "s"})`);
    row("Direct link", direct === null ? "none" : ms(direct));
    if (saving !== null) {
      info.dataset.saving = String(saving);
      row("Saving", `${ms(saving)} (${pct(direct ? saving / direct : 0)})`, saving > 0 ? "gain" : saving < 0 ? "loss" : "");
    }
  }

  function fill(id, rows, make, max = MAX_ROWS) {
    const tb = document.querySelector(`#${id} tbody`);
    tb.replaceChildren();
    if (!rows.length) {
      const tr = el("tr"), td = el("td", "empty", "none yet");
      td.colSpan = tb.parentElement.tHead.rows[0].cells.length;
      tr.appendChild(td);
      tb.appendChild(tr);
      return;
    }
    for (const r of rows.slice(0, max)) {
      const tr = el("tr");
      for (const c of make(r, tr)) tr.appendChild(typeof c === "string" ? el("td", "", c) : c);
      tb.appendChild(tr);
    }
  }
  const numTd = (v) => el("td", "n", v);

  function topSavings() {
    const rows = mesh.pairs.filter((p) => p[7] !== null && p[7] > 0).sort((a, b) => b[7] - a[7]).slice(0, 12);
    fill("top", rows, (p, tr) => {
      tr.dataset.src = names[p[0]];
      tr.dataset.dst = names[p[1]];
      tr.addEventListener("click", () => { sel = { src: names[p[0]], dst: names[p[1]], user: true }; render(); });
      return [names[p[0]], names[p[1]], p[2].map((i) => names[i]).join(", ") || "direct", numTd(ms(p[6])), numTd(ms(p[7]))];
    });
  }

  function eventValue(e) {
    switch (e.kind) {
      case "rtt_high": return `${ms(e.value)} (baseline ${ms(e.baseline)})`;
      case "loss_spike": return pct(e.value);
      case "route_flap": return `${e.value} changes in 60 s`;
      case "slow_consumer": return `${e.value} disconnected`;
      default: return "";
    }
  }

  function eventsTable() {
    fill("events", mesh.events, (e, tr) => {
      tr.dataset.kind = e.kind;
      return [time(e.at_ms), el("td", "", "") , e.relay + (e.peer ? " → " + e.peer : ""), eventValue(e)].map((c, i) => {
        if (i !== 1) return c;
        c.appendChild(el("span", "kind " + e.kind, e.kind.replace("_", " ")));
        return c;
      });
    });
  }

  function changesTable() {
    fill("changes", mesh.route_changes, (c) => [
      time(c.at_ms), c.relay, c.dst, `${c.from || "none"} → ${c.to || "none"}`, numTd(ms(c.metric_ms)),
    ]);
  }

  function relayTable(links) {
    const up = new Array(names.length).fill(0);
    for (const l of links.values()) if (l.up) { up[l.a]++; up[l.b]++; }
    fill("relays", mesh.relays, (r, tr) => {
      tr.dataset.relay = r.name;
      if (r.stale) tr.className = "stale";
      return [r.name + (r.is_self ? " (this relay)" : ""), r.region, numTd(String(r.connections)), numTd(String(r.subscriptions)),
        numTd(num(r.messages_in_per_s)), numTd(num(r.messages_out_per_s)), numTd(String(r.drops_total)),
        numTd(String(r.slow_consumer_disconnects_total)),
        numTd(r.intake_paused_ms_total == null ? "–" : num(r.intake_paused_ms_total / 1000) + " s"),
        numTd(String(up[r.id])), ago(r.age_ms)];
    }, Infinity);
  }

  function status(ok, text) {
    const s = $("status");
    s.className = "status " + (ok ? "ok" : "err");
    s.textContent = text;
  }

  // This relay's link backlog policy, from its own /metrics (same origin and access).
  async function backlog() {
    const set = (k, v) => (document.querySelector(`#headline [data-k="${k}"]`).textContent = v);
    try {
      const r = await fetch("/metrics", { cache: "no-store" });
      if (!r.ok) return;
      const v = {};
      const text = await r.text();
      edgeLimits(text, set);
      for (const line of text.split("\n")) {
        const m = /^fastpubsub_mesh_(links_backed_up|links_slow|messages_dropped_slow_link_total|backpressure_episodes_total|backpressure_seconds_total) (\S+)$/.exec(line);
        if (m) v[m[1]] = Number(m[2]);
      }
      if (!("links_backed_up" in v)) return;
      set("backlog", `${v.links_backed_up} / ${v.links_slow}`);
      set("backlog-detail", `${v.messages_dropped_slow_link_total} dropped on slow links; intake paused ${v.backpressure_episodes_total}× (${num(v.backpressure_seconds_total)} s)`);
    } catch (e) {
      // The mesh picture matters more; the next poll tries again.
    }
  }

  // This relay's edge limits (read stops, rate limits, handshake caps, ...), from its /metrics:
  // how often each bounded policy applied, and what the edge holds now.
  function edgeLimits(text, set) {
    const hits = {};
    let held = null;
    let pending = null;
    for (const line of text.split("\n")) {
      let m = /^fastpubsub_edge_limit_hits_total\{limit="([a-z_]+)"\} (\S+)$/.exec(line);
      if (m) {
        hits[m[1]] = Number(m[2]);
        continue;
      }
      m = /^fastpubsub_edge_(held_bytes|handshakes_pending) (\S+)$/.exec(line);
      if (m && m[1] === "held_bytes") held = Number(m[2]);
      else if (m) pending = Number(m[2]);
    }
    if (held === null) return;
    const hit = Object.entries(hits).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
    set("edge-limits", num(hit.reduce((a, [, n]) => a + n, 0)));
    const list = hit.length ? hit.map(([k, n]) => `${k.replace(/_/g, " ")} ${num(n)}`).join(" · ") : "none hit";
    set("edge-limits-detail", `${list}; ${num(held / 1024)} KiB held, ${num(pending)} handshakes pending`);
  }

  async function poll() {
    backlog();
    try {
      const r = await fetch("/v1/mesh", { cache: "no-store", headers: { Accept: "application/json" } });
      if (!r.ok) throw new Error(`/v1/mesh answered HTTP ${r.status}`);
      mesh = await r.json();
      render();
      status(true, "live");
    } catch (e) {
      status(false, `${e.message || e} — retrying`);
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  for (const id of ["src", "dst"]) {
    $(id).addEventListener("change", () => {
      sel[id] = $(id).value || null;
      sel.user = true;
      if (mesh) render();
    });
  }
  fetch("/dashboard/land.path").then((r) => (r.ok ? r.text() : "")).then((d) => $("land").setAttribute("d", d)).catch(() => {});
  poll();
})();
