// The dashboard's history view: the last minutes or hours of the recorder's database, from
// /history.json (see streamtag/web/history.py). No libraries, nothing beyond this server.
// Times are the browser's zone, named in the bar, on a 24-hour clock; ?until=T shows the span
// ending at T (a link to a past outage) in place of the last minutes.
"use strict";

(() => {
  const REFRESH_MS = 60000;
  const ROW_PX = 22;
  const TITLE_PX = 34;  // two rows of titles above the strip
  const LABEL_PX = 110;
  const MAX_TRACK_ROWS = 30;
  const MAX_TITLES = 40;  // more would overprint: only the lines are drawn then
  const $ = (id) => document.getElementById(id);
  const H23 = { hourCycle: "h23" };

  // ?until=T (Unix seconds or an ISO 8601 time) shows the span ending then, not now
  const UNTIL = new URLSearchParams(window.location.search).get("until");

  // The zone's offset from UTC at a time, in minutes east, and as written: UTC+01:00
  const offsetOf = (unixS) => -new Date(unixS * 1000).getTimezoneOffset();
  const utc = (offset) => {
    const sign = offset < 0 ? "-" : "+";
    const hh = String(Math.floor(Math.abs(offset) / 60)).padStart(2, "0");
    const mm = String(Math.abs(offset) % 60).padStart(2, "0");
    return `UTC${sign}${hh}:${mm}`;
  };
  // The offset the bar names: the span's end's. A time at another offset (the span crosses a
  // change of daylight-saving time) says its own, as the CLI's report does.
  let reference = Date.now() / 1000;
  const mark = (unixS) =>
    offsetOf(unixS) === offsetOf(reference) ? "" : ` (${utc(offsetOf(unixS))})`;
  const clock = (unixS) => new Date(unixS * 1000).toLocaleTimeString([], {
    hour: "2-digit", minute: "2-digit", second: "2-digit", ...H23 });
  const day = (unixS) => new Date(unixS * 1000).toLocaleString([], {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    ...H23 }) + mark(unixS);
  // a time with its date when that is not today's
  const when = (unixS) => {
    const d = new Date(unixS * 1000);
    return (d.toDateString() === new Date().toDateString() ? clock(unixS)
      : `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${clock(unixS)}`)
      + mark(unixS);
  };
  // a length as the CLI writes it: 45 s, 4:02, 1:04:02 (whole seconds first: never 1:60)
  const minutes = (s) => {
    const whole = Math.round(Math.max(0, s));
    if (whole < 60) return `${whole} s`;
    const [h, m, sec] = [Math.floor(whole / 3600), Math.floor(whole / 60) % 60, whole % 60];
    const pad = (n) => String(n).padStart(2, "0");
    return h ? `${h}:${pad(m)}:${pad(sec)}` : `${m}:${pad(sec)}`;
  };

  function zoneName() {
    const name = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
    return `${name} (${utc(offsetOf(reference))})`;
  }

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
  // the content row's colours, as the CLI's plot draws them
  const CONTENT = { music: "#1b9e77", speech: "#e6861a", silence: "#f2f2f2", tone: "#b05cc6",
                    noise: "#8c6d46" };
  const CONTENT_WORDS = { music: "music", speech: "speech", silence: "dead air",
                          tone: "stuck tone", noise: "noise" };
  // spans drawn over the strip, each in its own colour, labelled
  const SPANS = { off_air: ["rgba(228,32,42,0.85)", "OFF AIR", "#fff"],
                  silence: ["rgba(255,255,255,0.55)", "silence", "#111"],
                  not_recorded: ["rgba(10,10,10,0.8)", "not recorded", "#fff"] };

  function drawStrip(canvas, strip, answer, entries, spans) {
    // what the audio was, a row above the tags, where the database knows it
    const kinds = (strip.content || []).some((k) => k !== null) ? strip.content : null;
    const top = kinds ? 1 : 0;
    const rows = strip.tags.length + top;
    const width = canvas.clientWidth || 800;
    const height = TITLE_PX + Math.max(1, rows) * ROW_PX;
    const ratio = window.devicePixelRatio || 1;
    canvas.width = width * ratio;
    canvas.height = height * ratio;
    canvas.style.height = `${height}px`;
    const g = canvas.getContext("2d");
    g.scale(ratio, ratio);
    g.fillStyle = "#2a3140";  // no windows recorded in a bin: nothing is known
    g.fillRect(0, TITLE_PX, width, height - TITLE_PX);
    const plotW = width - LABEL_PX;
    const span = answer.until - answer.since;
    const xOf = (t) => LABEL_PX + ((Math.max(t, answer.since) - answer.since) / span) * plotW;
    const label = (text, r) => {
      g.fillStyle = "#f2f5fa";
      g.font = "13px system-ui, sans-serif";
      g.textBaseline = "middle";
      g.fillText(text, 4, TITLE_PX + r * ROW_PX + ROW_PX / 2, LABEL_PX - 8);
    };
    if (kinds) {
      const binW = plotW / kinds.length;
      kinds.forEach((kind, b) => {
        if (!Object.hasOwn(CONTENT, kind)) return;
        g.fillStyle = CONTENT[kind];
        g.fillRect(LABEL_PX + b * binW, TITLE_PX + 1, Math.ceil(binW), ROW_PX - 2);
      });
      label("content", 0);
    }
    strip.share.forEach((row, i) => {
      const r = i + top;
      const binW = plotW / row.length;  // never narrower than the stream's hop
      row.forEach((share, b) => {
        if (share === null) return;
        g.fillStyle = color(share);
        g.fillRect(LABEL_PX + b * binW, TITLE_PX + r * ROW_PX + 1, Math.ceil(binW), ROW_PX - 2);
      });
      label(strip.tags[i], r);
    });
    g.font = "bold 12px system-ui, sans-serif";
    for (const s of spans) {
      const [fill, named, ink] = SPANS[s.kind];
      // dead air that was a steady tone is said to be one, not silence
      const label = s.kind === "silence" && s.detail === "stuck tone" ? "stuck tone" : named;
      const x0 = xOf(s.start);
      const x1 = xOf(s.end === null ? answer.until : s.end);
      if (x1 <= x0) continue;
      g.fillStyle = fill;
      g.fillRect(x0, TITLE_PX, Math.max(2, x1 - x0), height - TITLE_PX);
      const length = (s.end === null ? answer.until : s.end) - s.start;
      g.save();  // the label runs up the span, as narrow as it may be
      g.translate(x0 + Math.max(1, (x1 - x0) / 2), height - 4);
      g.rotate(-Math.PI / 2);
      g.fillStyle = ink;
      g.textBaseline = "middle";
      g.fillText(`${label} ${minutes(length)}`, 0, 0, height - TITLE_PX - 8);
      g.restore();
    }
    g.strokeStyle = "rgba(255,255,255,0.85)";
    const shown = entries.filter((e) => e.end === null || e.end >= answer.since);
    shown.forEach((e, n) => {
      const x = xOf(e.start);
      if (e.start >= answer.since) {
        g.beginPath();
        g.moveTo(x, TITLE_PX - 4);
        g.lineTo(x, height);
        g.stroke();
      }
      if (shown.length > MAX_TITLES) return;
      // the title over its track, on two alternating rows, up to the next title in its row
      const next = shown[n + 2];
      const room = (next ? xOf(next.start) : width) - x - 6;
      g.fillStyle = e.end === null ? "#3ddc84" : "#f2f5fa";
      g.font = "12px system-ui, sans-serif";
      g.textBaseline = "top";
      if (room > 12) {
        g.fillText(`\u25b8 ${e.title || "(untitled)"}${e.end === null ? " (now)" : ""}`,
                   x + 2, (n % 2) * (TITLE_PX / 2) + 2, room);
      }
    });
  }

  // Each hour of this browser's zone: the quarter hours' windows per content added up (every
  // zone's offset is whole quarter hours), as shares of those whose content is known.
  function contentHours(details, quarters) {
    const hours = new Map();
    for (const [startS, counts] of quarters) {
      const hour = new Date(startS * 1000);
      hour.setMinutes(0, 0, 0);
      const key = hour.getTime() / 1000;
      const sum = hours.get(key) || {};
      for (const [kind, n] of Object.entries(counts)) sum[kind] = (sum[kind] || 0) + n;
      hours.set(key, sum);
    }
    details.hidden = hours.size === 0;
    if (!hours.size) return;
    const kinds = Object.keys(CONTENT).filter((k) => [...hours.values()].some((c) => c[k]));
    details.querySelector("summary").textContent =
      `content per hour (${hours.size} ${hours.size === 1 ? "hour" : "hours"})`;
    const head = details.querySelector("thead tr");
    head.replaceChildren(...["hour", ...kinds.map((k) => CONTENT_WORDS[k]), "windows"]
      .map((text) => Object.assign(document.createElement("th"), { textContent: text })));
    const rows = [...hours.entries()].sort((a, b) => a[0] - b[0]).map(([startS, counts]) => {
      const tr = document.createElement("tr");
      tr.dataset.start = String(startS);
      const known = Object.values(counts).reduce((a, b) => a + b, 0);
      const cells = [day(startS), ...kinds.map((k) => counts[k]
        ? `${(100 * counts[k] / known).toFixed(1)}%` : "-"), String(known)];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (i > 0) td.className = "num";
        if (i > 0 && i <= kinds.length) td.dataset.content = kinds[i - 1];
        tr.appendChild(td);
      });
      return tr;
    });
    details.querySelector("tbody").replaceChildren(...rows);
  }

  function notes(e, answer) {
    const out = [];
    if (e.partial.length) out.push(`partial: ${e.partial.join(", ")}`);
    const tone = e.tone_s || 0;
    if (e.silence_s - tone >= 0.5) out.push(`silence ${minutes(e.silence_s - tone)}`);
    if (tone >= 0.5) out.push(`stuck tone ${minutes(tone)}`);
    // an outage or a restart inside: less heard than its length, as the CLI says it
    if (e.end !== null && e.audio_s < e.end - e.start - answer.heard_shown_s) {
      out.push(`heard ${minutes(e.audio_s)}`);
    }
    return out.join("; ");
  }

  function panel(id, data, answer) {
    const node = $("history-template").content.firstElementChild.cloneNode(true);
    node.dataset.stream = id;
    node.querySelector(".stream-name").textContent = id;
    node.querySelector(".summary").textContent = data.windows
      ? `${data.windows} windows, ${when(data.first_at)} to ${when(data.last_at)}`
      : "no windows in this span";
    // what the audio was: each content's share, coloured as in the strip's content row
    const shares = node.querySelector(".content-shares");
    for (const [kind, share] of data.content || []) {
      const item = document.createElement("span");
      item.className = "content-share";
      item.dataset.content = kind;
      item.textContent = `${CONTENT_WORDS[kind] || kind} ${(100 * share).toFixed(1)}%`;
      if (Object.hasOwn(CONTENT, kind)) item.style.borderColor = CONTENT[kind];
      shares.appendChild(item);
    }
    shares.hidden = !(data.content || []).length;
    contentHours(node.querySelector(".content-hours"), data.content_quarters || []);
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
    const entries = answer.asrun.filter((e) => e.stream === id);
    const body = node.querySelector(".tracks tbody");
    for (const e of entries.slice(-MAX_TRACK_ROWS).reverse()) {
      const tr = document.createElement("tr");
      if (e.now_playing) tr.className = "now";
      // a track of dead air leads with no tag at all
      const tags = e.active.length ? e.active.join(", ") : !e.top.length ? "none" :
        `(none most of the time; top: ${e.top.map((t) => t[0]).join(", ")})`;
      // its length from start to end (or now), as the CLI's report gives it
      const length = (e.end === null ? answer.until : e.end) - e.start;
      const cells = [when(e.start), e.end === null ? "now playing" : when(e.end),
                     minutes(length), e.title || "(untitled)", tags, notes(e, answer)];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (i < 3) td.className = "num";
        if (i === 5) td.className = "note";
        tr.appendChild(td);
      });
      body.appendChild(tr);
    }
    node.querySelector(".tracks").hidden = entries.length === 0;
    const more = node.querySelector(".more-tracks");
    more.textContent = entries.length > MAX_TRACK_ROWS
      ? `the last ${MAX_TRACK_ROWS} of ${entries.length} tracks in this span; ` +
        "streamtag history --db URL lists them all" : "";
    more.hidden = entries.length <= MAX_TRACK_ROWS;
    const spans = [...answer.off_air, ...answer.silence, ...answer.not_recorded]
      .filter((s) => s.stream === id);
    const off = answer.off_air.filter((s) => s.stream === id);
    const offair = node.querySelector(".offair");
    offair.textContent = off.map((s) => `OFF AIR ${when(s.start)} to ${
      s.end === null ? "now" : when(s.end)} (${minutes((s.end === null ? answer.until : s.end)
      - s.start)})${s.detail ? ": " + s.detail : ""}${
      // its end is the first audio heard; the station came back at most this long before it
      typeof s.back_within_s === "number" && s.end !== null
        ? `, back at ${when(s.end)} (first audio heard; on air again within ` +
          `${s.back_within_s.toFixed(1)} s before)` : ""}`).join("; ");
    offair.hidden = off.length === 0;
    const lost = answer.gaps.filter((g) => g.stream === id);
    const restarts = answer.restarts.filter((r) => r.stream === id);
    const missing = [];
    if (lost.length) {
      const missed = lost.reduce((n, g) => n + g.missed, 0);
      missing.push(`${missed} messages missing in ${lost.length} gaps`);
    }
    if (restarts.length) missing.push(`daemon restarted ${restarts.length}x`);
    const note = node.querySelector(".missing");
    note.textContent = missing.join("; ");
    note.hidden = missing.length === 0;
    node.querySelector(".axis-start").textContent = day(answer.since);
    node.querySelector(".axis-end").textContent = day(answer.until);
    return [node, () => drawStrip(node.querySelector("canvas"), data.strip, answer, entries,
                                  spans)];
  }

  function spanText(minutesValue) {
    const option = [...$("span").options].find((o) => o.value === minutesValue);
    return option ? option.textContent : `${minutesValue} minutes`;
  }

  let timer = null;
  async function load() {
    clearTimeout(timer);
    timer = setTimeout(load, REFRESH_MS);
    const span = $("span").value;
    let answer;
    try {
      const until = UNTIL === null ? "" : `&until=${encodeURIComponent(UNTIL)}`;
      const response = await fetch(`history.json?minutes=${encodeURIComponent(span)}${until}`,
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
    reference = answer.until;
    $("source").textContent = answer.database;
    $("zone").textContent = zoneName();
    $("updated").textContent = UNTIL === null ? `updated ${clock(answer.until)}`
      : `ending ${day(answer.until)}`;
    const main = $("history");
    main.replaceChildren();
    const ids = Object.keys(answer.streams);
    if (!ids.length) {
      const p = document.createElement("p");
      p.id = "empty";
      p.className = "empty";
      p.textContent = UNTIL === null ? `Nothing recorded in the last ${spanText(span)}.`
        : `Nothing recorded in the ${spanText(span)} ending ${day(answer.until)}.`;
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

  if (UNTIL !== null) $("span").parentElement.firstChild.textContent = "the ";
  $("span").addEventListener("change", load);
  window.addEventListener("resize", () => load());
  load();
})();
