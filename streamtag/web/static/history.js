// The dashboard's history view: the last hours of the recorder's database, from
// /history.json (see streamtag/web/history.py). No libraries, nothing beyond this server.
"use strict";

(() => {
  const REFRESH_MS = 60000;
  const ROW_PX = 22;
  const LABEL_PX = 110;
  const MAX_TRACK_ROWS = 30;
  const $ = (id) => document.getElementById(id);

  const clock = (unixS) => new Date(unixS * 1000).toLocaleTimeString([], {
    hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const day = (unixS) => new Date(unixS * 1000).toLocaleString([], {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  const minutes = (s) => (s >= 60 ? `${Math.floor(s / 60)}:${String(Math.round(s % 60))
    .padStart(2, "0")}` : `${Math.round(s)} s`);

  function banner(text) {
    const b = $("banner");
    b.textContent = text || "";
    b.hidden = !text;
  }

  // viridis-like ramp, dark (never) to yellow (always active)
  const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  function color(share) {
    const x = Math.max(0, Math.min(1, share)) * (RAMP.length - 1);
    const i = Math.min(Math.floor(x), RAMP.length - 2);
    const f = x - i;
    const c = RAMP[i].map((v, k) => Math.round(v + (RAMP[i + 1][k] - v) * f));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  function drawStrip(canvas, strip, answer, tracks) {
    const rows = strip.tags.length;
    const width = canvas.clientWidth || 800;
    const height = Math.max(1, rows) * ROW_PX;
    const ratio = window.devicePixelRatio || 1;
    canvas.width = width * ratio;
    canvas.height = height * ratio;
    canvas.style.height = `${height}px`;
    const g = canvas.getContext("2d");
    g.scale(ratio, ratio);
    g.fillStyle = "#2a3140";  // no windows recorded in a bin: nothing is known
    g.fillRect(0, 0, width, height);
    const plotW = width - LABEL_PX;
    const binW = plotW / answer.bins;
    strip.share.forEach((row, r) => {
      row.forEach((share, b) => {
        if (share === null) return;
        g.fillStyle = color(share);
        g.fillRect(LABEL_PX + b * binW, r * ROW_PX + 1, Math.ceil(binW), ROW_PX - 2);
      });
      g.fillStyle = "#f2f5fa";
      g.font = "13px system-ui, sans-serif";
      g.textBaseline = "middle";
      g.fillText(strip.tags[r], 4, r * ROW_PX + ROW_PX / 2, LABEL_PX - 8);
    });
    const span = answer.until - answer.since;
    g.strokeStyle = "rgba(255,255,255,0.85)";
    for (const t of tracks) {
      if (t.started_at < answer.since) continue;
      const x = LABEL_PX + ((t.started_at - answer.since) / span) * plotW;
      g.beginPath();
      g.moveTo(x, 0);
      g.lineTo(x, height);
      g.stroke();
    }
  }

  function panel(id, data, answer) {
    const node = $("history-template").content.firstElementChild.cloneNode(true);
    node.dataset.stream = id;
    node.querySelector(".stream-name").textContent = id;
    node.querySelector(".summary").textContent =
      `${data.windows} windows, ${clock(data.first_at)} to ${clock(data.last_at)}`;
    const list = node.querySelector(".airtime");
    for (const [tag, share] of data.airtime.slice(0, 12)) {
      const li = document.createElement("li");
      li.dataset.tag = tag;
      li.innerHTML = '<span class="name"></span><span class="meter"><span class="fill">' +
        '</span></span><span class="pct"></span>';
      li.querySelector(".name").textContent = tag;
      li.querySelector(".fill").style.width = `${(100 * share).toFixed(1)}%`;
      li.querySelector(".pct").textContent = `${(100 * share).toFixed(1)}%`;
      list.appendChild(li);
    }
    const tracks = answer.tracks.filter((t) => t.stream === id);
    const body = node.querySelector(".tracks tbody");
    for (const t of tracks.slice(-MAX_TRACK_ROWS).reverse()) {
      const tr = document.createElement("tr");
      const cells = [clock(t.started_at), minutes(t.end_s - t.start_s),  // audio length
                     t.title || "(untitled)", t.active.length ? t.active.join(", ") :
                     `(none most of the time; top: ${t.top.join(", ")})`];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (i < 2) td.className = "num";
        tr.appendChild(td);
      });
      body.appendChild(tr);
    }
    node.querySelector(".tracks").hidden = tracks.length === 0;
    const lost = answer.gaps.filter((g) => g.stream === id);
    const restarts = answer.restarts.filter((r) => r.stream === id);
    const notes = [];
    if (lost.length) {
      const missed = lost.reduce((n, g) => n + g.missed, 0);
      notes.push(`${missed} messages missing in ${lost.length} gaps`);
    }
    if (restarts.length) notes.push(`daemon restarted ${restarts.length}x`);
    const missing = node.querySelector(".missing");
    missing.textContent = notes.join("; ");
    missing.hidden = notes.length === 0;
    node.querySelector(".axis-start").textContent = day(answer.since);
    node.querySelector(".axis-end").textContent = day(answer.until);
    return [node, () => drawStrip(node.querySelector("canvas"), data.strip, answer, tracks)];
  }

  let timer = null;
  async function load() {
    clearTimeout(timer);
    timer = setTimeout(load, REFRESH_MS);
    const hours = $("hours").value;
    let answer;
    try {
      const response = await fetch(`history.json?hours=${encodeURIComponent(hours)}`,
                                   { cache: "no-store" });
      answer = await response.json();
      if (!response.ok) {
        banner(answer.error || `the server answered ${response.status}`);
        return;
      }
    } catch (err) {
      banner(`Dashboard server unreachable (${err.message}); retrying`);
      return;
    }
    banner("");
    $("source").textContent = answer.database;
    $("updated").textContent = `updated ${clock(answer.until)}`;
    const main = $("history");
    main.replaceChildren();
    const ids = Object.keys(answer.streams);
    if (!ids.length) {
      const p = document.createElement("p");
      p.id = "empty";
      p.className = "empty";
      p.textContent = `Nothing recorded in the last ${hours} hours.`;
      main.appendChild(p);
      return;
    }
    const draws = [];
    for (const id of ids) {
      const [node, draw] = panel(id, answer.streams[id], answer);
      main.appendChild(node);
      draws.push(draw);
    }
    draws.forEach((draw) => draw());  // after layout: the canvases know their width
    document.body.dataset.loaded = String(answer.until);
  }

  $("hours").addEventListener("change", load);
  window.addEventListener("resize", () => load());
  load();
})();
