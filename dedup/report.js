// The review page's script (inlined into report.html by dedup/report.py; no network but the review server).
// Decisions live in `dec` (one per row, null = undecided). Saved through the review server
// (`python -m dedup review --report DIR`: POST /api/decisions, written atomically beside the report) when the
// page is served by it, else downloaded as decisions.json for `python -m dedup blocklist --report DIR
// --decisions FILE`. Unsaved changes are kept in this browser's localStorage until a save succeeds.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("review-data").textContent);
  const rows = DATA.rows; // [corpus video, dataset, downstream video, similarity | null, kind]
  const NAMES = {leak: "leak", not_leak: "not a leak", unsure: "unsure"};
  const served = location.protocol === "http:" || location.protocol === "https:";
  const storeKey = "tvts-review:" + DATA.report_id;
  let dec = DATA.decisions.slice();
  let others = DATA.others.slice(); // decisions of pairs this run does not flag: passed through untouched
  let cur = -1;
  let dirty = false;
  let onlyUndecided = false;
  const keyOf = (c, d, v) => JSON.stringify([c, d, v]);
  const rowEl = (i) => document.getElementById("row-" + (i + 1));
  const status = (text, cls) => {
    const el = document.getElementById("status");
    el.textContent = text;
    el.className = cls || "";
  };

  function persist() {
    try { // keyed by pair, not by row number: a rerun of the job may reorder or add rows
      if (dirty) localStorage.setItem(storeKey, JSON.stringify(Object.fromEntries(rows.map((r, i) => [keyOf(r[0], r[1], r[2]), dec[i]]))));
      else localStorage.removeItem(storeKey);
    } catch (e) { /* file:// or private mode: the save button still works */ }
  }

  function paint(i) {
    const el = rowEl(i);
    if (!el) return;
    const d = dec[i] ? dec[i].decision : "";
    el.dataset.decision = d;
    el.querySelector(".state").textContent = d ? NAMES[d] : "undecided";
  }

  function counts() {
    const n = {leak: 0, not_leak: 0, unsure: 0, undecided: 0};
    dec.forEach((d) => { n[d ? d.decision : "undecided"] += 1; });
    for (const k in n) document.getElementById("count-" + k).textContent = n[k];
    document.getElementById("dirty").textContent = dirty ? "unsaved changes" : "";
  }

  function setDecision(i, d) {
    if (i < 0 || i >= rows.length) return;
    const before = dec[i] ? dec[i].decision : null;
    if (before === d) return;
    dec[i] = d ? {decision: d, decided_at: new Date().toISOString().replace(/\.\d+Z$/, "Z")} : null;
    dirty = true;
    paint(i);
    persist();
    counts();
    drawHistogram();
  }

  const visible = (i) => !(onlyUndecided && dec[i]);

  function select(i) {
    if (i < 0 || i >= rows.length) return;
    if (cur >= 0 && rowEl(cur)) rowEl(cur).classList.remove("current");
    cur = i;
    const el = rowEl(i);
    buildStrip(el);
    el.classList.add("current");
    el.focus({preventScroll: true});
    el.scrollIntoView({block: "center"});
    document.getElementById("position").textContent = (i + 1) + " / " + rows.length;
  }

  function move(step) {
    let i = cur < 0 ? (step > 0 ? -1 : rows.length) : cur;
    for (i += step; i >= 0 && i < rows.length; i += step) {
      if (visible(i)) return select(i);
    }
  }

  function payload() {
    return rows.map((r, i) => ({corpus_video_id: r[0], downstream_dataset: r[1], downstream_video_id: r[2],
                                decision: dec[i] ? dec[i].decision : null, decided_at: dec[i] ? dec[i].decided_at : ""}));
  }

  async function save() {
    if (!served) return download();
    status("saving...");
    try {
      const res = await fetch("api/decisions", {method: "POST", headers: {"Content-Type": "application/json"},
                                                body: JSON.stringify({report_id: DATA.report_id, decisions: payload()})});
      const body = await res.json();
      if (!res.ok) throw new Error(body.error || res.statusText);
      dirty = false;
      persist();
      counts();
      status(body.message, "ok");
    } catch (e) {
      status("not saved: " + e.message + " (your decisions stay in this browser)", "bad");
    }
  }

  function download() {
    // Undecided rows go in too (decision null), so folding the file in also clears what was cleared here.
    const file = {format: "tvts-leakage-decisions/1", report_id: DATA.report_id, report: DATA.report,
                  saved_at: new Date().toISOString(), decisions: payload().concat(others)};
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([JSON.stringify(file, null, 2)], {type: "application/json"}));
    a.download = "decisions.json";
    document.body.appendChild(a);
    a.click();
    a.remove();
    dirty = false;
    persist();
    counts();
    status("downloaded decisions.json: run python -m dedup blocklist --report " + DATA.report_dir +
           " --decisions <the downloaded file> (or move it there as decisions.json)", "ok");
  }

  function apply(entries) {
    const index = new Map(rows.map((r, i) => [keyOf(r[0], r[1], r[2]), i]));
    dec = rows.map(() => null);
    others = [];
    for (const e of entries) {
      const i = index.get(keyOf(e.corpus_video_id, e.downstream_dataset, e.downstream_video_id));
      if (i === undefined) others.push(e);
      else dec[i] = {decision: e.decision, decided_at: e.decided_at || ""};
    }
  }

  function restoreUnsaved() {
    let pending = null;
    try { pending = JSON.parse(localStorage.getItem(storeKey) || "null"); } catch (e) { pending = null; }
    if (!pending || typeof pending !== "object" || Array.isArray(pending)) return;
    let n = 0;
    rows.forEach((r, i) => {
      const key = keyOf(r[0], r[1], r[2]);
      if (key in pending && JSON.stringify(pending[key]) !== JSON.stringify(dec[i])) { dec[i] = pending[key]; n += 1; }
    });
    if (n) {
      dirty = true;
      status("restored " + n + " unsaved decisions from this browser: press s to save them", "bad");
    }
  }

  const esc = (v) => String(v).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  const secs = (t) => (t === null || t === undefined ? "" : Number(t).toFixed(2) + " s");

  function buildStrip(el) {
    const holder = el.querySelector(".strip[data-s]");
    if (!holder || holder.dataset.built) return;
    holder.dataset.built = "1";
    const ds = esc(rows[Number(holder.dataset.s)][1]);
    const img = (src, alt) => src ? `<img loading="lazy" decoding="async" width="160" height="120" src="${esc(src)}" alt="${alt}">`
                                  : `<span class="noframe">no frame</span>`;
    holder.innerHTML = (DATA.strips[Number(holder.dataset.s)] || []).map(([c, d, ct, cf, dt, sim, match]) =>
      `<figure>${img(c, "corpus frame")}<figcaption>` +
      (match ? `corpus ${secs(ct)} (frame ${cf})` : "corpus: first frame (not a frame match)") +
      `</figcaption>${img(d, ds + " frame")}<figcaption>` +
      (match ? `${ds} ${secs(dt)} &middot; ${Number(sim).toFixed(4)}` : `${ds}: first frame`) +
      `</figcaption></figure>`).join("");
  }

  function drawHistogram() {
    const el = document.getElementById("histogram");
    const pts = [];
    rows.forEach((r, i) => { if (r[3] !== null) pts.push([r[3], dec[i] ? dec[i].decision : "undecided"]); });
    if (!pts.length) {
      el.innerHTML = "<p>No flagged pair has a frame similarity (source-id or text matches only).</p>";
      return;
    }
    const order = ["leak", "not_leak", "unsure", "undecided"];
    const colour = {leak: "#c0392b", not_leak: "#27ae60", unsure: "#e0a030", undecided: "#9aa5b1"};
    // From just below the lowest flagged pair (and the threshold, when it is near): the bars stay readable.
    const least = Math.min(...pts.map((p) => p[0]));
    let lo = least - DATA.threshold > 0.1 ? least - 0.02 : Math.min(DATA.threshold, least);
    lo = Math.max(-1, Math.floor(lo * 100 - 0.5) / 100);
    const hi = 1.0, nb = 25, w = (hi - lo) / nb;
    const bins = Array.from({length: nb}, () => ({leak: 0, not_leak: 0, unsure: 0, undecided: 0}));
    for (const [s, d] of pts) bins[Math.min(nb - 1, Math.max(0, Math.floor((s - lo) / w)))][d] += 1;
    const top = Math.max(1, ...bins.map((b) => order.reduce((a, k) => a + b[k], 0)));
    const W = 640, H = 200, L = 40, B = 30, T = 10, pw = W - L - 10, ph = H - B - T;
    const x = (v) => L + (v - lo) / (hi - lo) * pw;
    let svg = `<svg id="decision-histogram" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" ` +
              `aria-label="best similarity of flagged video pairs by decision">`;
    bins.forEach((b, j) => {
      let y = T + ph;
      for (const k of order) {
        if (!b[k]) continue;
        const h = b[k] / top * ph;
        y -= h;
        svg += `<rect class="bar-${k}" x="${(x(lo + j * w) + 1).toFixed(1)}" y="${y.toFixed(1)}" ` +
               `width="${(pw / nb - 2).toFixed(1)}" height="${h.toFixed(1)}" fill="${colour[k]}">` +
               `<title>${b[k]} ${k.replace("_", " ")} in ${(lo + j * w).toFixed(3)}-${(lo + (j + 1) * w).toFixed(3)}</title></rect>`;
      }
    });
    if (DATA.threshold >= lo) {
      const tx = x(DATA.threshold).toFixed(1);
      svg += `<line x1="${tx}" x2="${tx}" y1="${T}" y2="${T + ph}" stroke="#c0392b" stroke-dasharray="4 3"/>` +
             `<text x="${Number(tx) + 4}" y="${T + 10}" font-size="11" fill="#c0392b">threshold ${DATA.threshold}</text>`;
    } else {
      svg += `<text x="${L + 4}" y="${T + 10}" font-size="11" fill="#c0392b">threshold ${DATA.threshold} (below this range)</text>`;
    }
    svg += `<line x1="${L}" x2="${L + pw}" y1="${T + ph}" y2="${T + ph}" stroke="#555"/>` +
           `<text x="${L}" y="${H - 12}" font-size="11">${lo.toFixed(2)}</text>` +
           `<text x="${L + pw - 20}" y="${H - 12}" font-size="11">1.00</text>` +
           `<text x="4" y="${T + 10}" font-size="11">${top}</text><text x="4" y="${T + ph}" font-size="11">0</text></svg>`;
    const n = {leak: 0, not_leak: 0, unsure: 0, undecided: 0};
    pts.forEach((p) => { n[p[1]] += 1; });
    const legend = order.map((k) => `<span class="swatch" style="background:${colour[k]}"></span>` +
                                    `${k.replace("_", " ")} ${n[k]}`).join(" &nbsp; ");
    const leaks = pts.filter((p) => p[1] === "leak").map((p) => p[0]);
    const fine = pts.filter((p) => p[1] === "not_leak").map((p) => p[0]);
    let gap = "";
    if (leaks.length && fine.length) {
      const a = Math.min(...leaks), b = Math.max(...fine);
      gap = `lowest leak ${a.toFixed(4)}, highest not a leak ${b.toFixed(4)}: ` +
            (a > b ? `a threshold in between separates them` : `they overlap: no threshold separates them`);
    }
    const without = rows.length - pts.length;
    const note = without ? ` &nbsp; (${without} without a frame similarity: source-id or text matches)` : "";
    el.innerHTML = svg + `<div class="legend">${legend}${note}</div><div id="separation">${gap}</div>`;
  }

  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const tag = (ev.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select") return;
    const mark = {l: "leak", n: "not_leak", u: "unsure"}[ev.key];
    if (mark) {
      if (cur < 0) move(1);
      setDecision(cur, mark);
      move(1); // the next row: going through a long list is one key per row
    } else if (ev.key === "j" || ev.key === "ArrowDown") move(1);
    else if (ev.key === "k" || ev.key === "ArrowUp") move(-1);
    else if (ev.key === "c" || ev.key === "Backspace") setDecision(cur, null);
    else if (ev.key === "s") save();
    else if (ev.key === "e" && cur >= 0) { const d = rowEl(cur).querySelector("details"); if (d) d.open = !d.open; }
    else if (ev.key === "f") {
      onlyUndecided = !onlyUndecided;
      document.body.classList.toggle("only-undecided", onlyUndecided);
    } else if (ev.key === "?") document.getElementById("help").classList.toggle("shown");
    else return;
    ev.preventDefault();
  });

  document.getElementById("rows").addEventListener("click", (ev) => {
    const el = ev.target.closest("section.row");
    if (!el) return;
    const i = Number(el.dataset.i);
    const button = ev.target.closest("button[data-d]");
    if (button) setDecision(i, button.dataset.d === "clear" ? null : button.dataset.d);
    if (i !== cur) select(i);
  });
  document.getElementById("save").addEventListener("click", save);
  window.addEventListener("beforeunload", (ev) => { if (dirty) { ev.preventDefault(); ev.returnValue = ""; } });

  function watchStrips() {
    const sections = document.querySelectorAll("#rows section.row");
    if (!("IntersectionObserver" in window)) { sections.forEach(buildStrip); return; }
    const seen = new IntersectionObserver((entries) => {
      for (const e of entries) {
        if (e.isIntersecting) { buildStrip(e.target); seen.unobserve(e.target); }
      }
    }, {rootMargin: "1200px 0px"});
    sections.forEach((el) => seen.observe(el));
  }

  function ready() {
    restoreUnsaved();
    rows.forEach((_, i) => paint(i));
    watchStrips();
    counts();
    drawHistogram();
    document.getElementById("save").textContent = served ? "save (s)" : "download decisions.json (s)";
    document.body.dataset.ready = "1";
    performance.mark("review-ready"); // bench/report_load.py reads it
  }

  if (served) {
    fetch("api/decisions").then((res) => res.json()).then((body) => {
      if (body.report_id !== DATA.report_id) {
        status("this page shows report " + DATA.report_id + " but the folder now holds " + body.report_id +
               " (the leakage job ran again): reload the page", "bad");
      } else apply(body.decisions);
    }).catch((e) => status("review server not reachable (" + e.message + "): showing the decisions saved in the page", "bad"))
      .finally(ready);
  } else ready();
})();
