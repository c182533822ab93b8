// The streamtag dashboard page: draws what the bridge at /ws forwards (see server.py for the
// message types). No libraries, no network access beyond this page's own server.
"use strict";

(() => {
  const MAX_BARS = { "1": 12, "2": 10, many: 8 };  // more tags: the highest scores only
  const QUIET_S = 30;            // no scores for this long: the panel says so and dims
  const MAX_TIMELINE_ROWS = 10;
  const ROW_PX = 34;
  const LABEL_PX = 150;
  const BIN_S = 1;               // as the bridge's timeline bins
  const RESTART_NOTE_S = 60;
  const LAST_TRACKS = 5;         // as the bridge's FeedState
  // What the audio is (protocol 1.7's content), in the words a monitor uses; the class colours
  // it as the history's plot does.
  const CONTENT_WORDS = { music: "music", speech: "speech", silence: "dead air",
                          tone: "stuck tone", noise: "noise" };
  // As FeedState.carries_tags: while the audio is not music, no tag is shown on.
  const carriesTags = (content) => content === null || content === undefined ||
    content === "music";

  const view = {
    streams: new Map(),          // id -> stream state, as the bridge's FeedState views
    offsetS: 0,                  // bridge clock minus this browser's clock
    historyS: 300,
    daemon: null,                // liveness from the last tick
    feed: [],
    connected: false,
    retryAt: 0,
  };

  const { $, el } = window.streamtagPage;
  // The socket, the bridge's clock, the daemon's liveness and batched drawing: feed.js.
  const { scheduleRender, bridgeNow, stream, connect } = window.streamtagPage.live({
    view, blankStream, render,
    onHello: (msg) => {
      view.historyS = msg.history_s;
      view.feed = msg.feed;
      view.streams.clear();
      for (const [id, s] of Object.entries(msg.streams)) view.streams.set(id, s);
      $("feed").textContent = "feed " + msg.feed.join(", ");
    },
    onSnapshot: (msg) => {
      for (const [id, s] of Object.entries(msg.streams)) view.streams.set(id, s);
    },
    onRestart: (s, receivedAt) => {
      resetStream(s);
      s.restarted_at = receivedAt;
    },
    onMessage: applyMessage,
    onClose: (retryMs) => { view.retryAt = Date.now() + retryMs; },
  });

  // ---------------------------------------------------------------- state

  function blankStream(id) {
    return {
      id, session: null, model: null, tags: [], smoothed: [], active: [], thresholds: null,
      status: null, updated_at: null, gaps: 0, restarted_at: null, history: [], tracks: [],
      audio: null, silence: null, content: null,
    };
  }

  function resetStream(s) {
    const keep = { history: s.history, gaps: s.gaps, tracks: s.tracks };
    Object.assign(s, blankStream(s.id), keep);
  }

  function record(s, t) {
    const start = Math.floor(t / BIN_S) * BIN_S;
    const last = s.history[s.history.length - 1];
    if (last && last[0] === start) {
      const merged = new Set([...last[1], ...s.active]);
      last[1] = s.tags.filter((tag) => merged.has(tag));
    } else {
      s.history.push([start, s.active.slice()]);
    }
    const oldest = t - view.historyS - BIN_S;
    while (s.history.length && s.history[0][0] < oldest) s.history.shift();
  }

  // The rest of FeedState.apply_message (feed.js did the daemon, the session and a restart).
  function applyMessage(s, h, b, m, receivedAt) {
    s.gaps += m.gap || 0;
    switch (h.msg_type) {
      case "scores":
        if (!s.model || !b.model || s.model.hash !== b.model.hash ||
            (s.thresholds && s.thresholds.length !== b.tags.length)) {
          s.thresholds = null;
        }
        s.tags = b.tags;
        s.smoothed = b.smoothed;
        s.content = Object.hasOwn(CONTENT_WORDS, b.content) ? b.content : null;  // since 1.7
        s.active = carriesTags(s.content) ? b.active : [];
        s.model = b.model;
        s.audio = b.audio || null;  // since protocol 1.2
        s.updated_at = receivedAt;
        record(s, receivedAt);
        break;
      case "event":
        s.active = s.active.filter((tag) => tag !== b.tag);
        if (b.state === "on" && carriesTags(s.content)) s.active.push(b.tag);
        break;
      case "status":
        s.status = b;
        break;
      case "track":
        s.tracks = [...(s.tracks || []), b].slice(-LAST_TRACKS);
        break;
      case "silence":
        // "on" arrives duration_s of audio after the silence began: its start by this clock
        s.silence = b.state === "on"
          ? { since: receivedAt - Math.max(0, b.duration_s || 0), start_s: b.start_s,
            threshold_dbfs: b.threshold_dbfs, cause: b.cause === "tone" ? "tone" : "silence" }
          : null;
        break;
    }
  }

  setInterval(() => {
    $("clock").textContent = new Date().toLocaleTimeString([], { hour12: false });
    scheduleRender();
  }, 1000);

  // ---------------------------------------------------------------- drawing

  function tagHue(tag) {
    let hash = 2166136261;  // FNV-1a: the same tag gets the same colour on every screen
    for (let i = 0; i < tag.length; i++) {
      hash ^= tag.charCodeAt(i);
      hash = Math.imul(hash, 16777619) >>> 0;
    }
    return hash % 360;
  }
  // Yellows and greens look lighter at the same HSL lightness: darker ones keep white text
  // at a contrast of at least 4.5:1 whatever the hue.
  function tagColor(tag, light = 32) {
    const hue = tagHue(tag);
    const bright = hue >= 40 && hue <= 200 ? 8 : hue > 200 && hue < 215 ? 4 : 0;
    return `hsl(${hue}, 68%, ${light - bright}%)`;
  }

  function ago(seconds) {
    if (seconds < 90) return Math.round(seconds) + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  function render() {
    renderBanner();
    const main = $("streams");
    const ids = [...view.streams.keys()].sort();
    $("empty").hidden = ids.length > 0;
    main.dataset.layout = ids.length <= 1 ? "1" : ids.length === 2 ? "2" : "many";
    const panels = new Map();
    for (const node of main.querySelectorAll("section.panel")) panels.set(node.dataset.stream, node);
    for (const [id, node] of panels) if (!view.streams.has(id)) node.remove();
    for (const id of ids) {
      let panel = panels.get(id);
      if (!panel) {
        panel = $("panel-template").content.firstElementChild.cloneNode(true);
        panel.dataset.stream = id;
        panel.querySelector(".stream-name").textContent = id;
        panel.querySelector(".venue-link").href = "venue?stream=" + encodeURIComponent(id);
        main.appendChild(panel);
      }
      renderPanel(panel, view.streams.get(id));
    }
    // Panels in id order, whatever order they appeared in. Moving a node restarts its CSS
    // animations, so only what is out of place moves.
    placeInOrder(main, ids.map((id) => main.querySelector(`section.panel[data-stream="${CSS.escape(id)}"]`)),
      main.querySelector("section.panel"));
  }

  function placeInOrder(parent, nodes, first) {
    let at = first;
    for (const node of nodes) {
      if (node !== at) parent.insertBefore(node, at);
      at = node.nextElementSibling;
    }
  }

  function renderBanner() {
    const banner = $("banner");
    const pill = $("connection");
    const d = view.daemon;
    let text = "";
    let info = false;
    if (!view.connected) {
      const wait = Math.max(0, Math.ceil((view.retryAt - Date.now()) / 1000));
      text = `Dashboard server unreachable \u2014 reconnecting${wait ? " in " + wait + " s" : ""}`;
      pill.textContent = "offline";
      pill.className = "pill down";
    } else if (d && !d.seen) {
      text = `Waiting for the daemon at ${view.feed.join(", ")}`;
      info = true;
      pill.textContent = "waiting";
      pill.className = "pill";
    } else if (d && !d.alive) {
      text = `Daemon not seen for ${ago(d.age_s)}`;
      pill.textContent = "daemon lost";
      pill.className = "pill down";
    } else {
      pill.textContent = "live";
      pill.className = "pill live";
    }
    banner.hidden = !text;
    banner.textContent = text;
    banner.classList.toggle("info", info);
    document.body.classList.toggle("stale", Boolean(text) && !info);
  }

  function renderPanel(panel, s) {
    const state = s.status ? s.status.state : null;
    panel.classList.toggle("reconnecting", state === "reconnecting");
    panel.classList.toggle("failed", state === "failed");
    panel.classList.toggle("ended", state === "ended");
    const pill = panel.querySelector(".state");
    pill.className = "state pill" + (state === "running" ? " live" : state === "failed" ? " down" : "");
    pill.textContent = state || "";
    pill.hidden = !state;
    panel.querySelector(".title").textContent = s.status && s.status.title ? s.status.title : "";
    // The station's own name (its server's icy-name), beside the stream id.
    const station = panel.querySelector(".station");
    station.textContent = s.status && s.status.station ? s.status.station : "";
    station.hidden = !station.textContent;
    // what it hears now: music, speech, dead air, a stuck tone or noise
    const content = panel.querySelector(".content-now");
    const word = s.content && state !== "ended" ? CONTENT_WORDS[s.content] : "";
    content.textContent = word;
    content.dataset.content = word ? s.content : "";
    content.hidden = !word;
    // the scores' bars say what the model makes of the audio; not music, they are dimmed
    panel.classList.toggle("not-music", !carriesTags(s.content));

    const problem = panel.querySelector(".problem");
    let problemText = "";
    if (state === "reconnecting") problemText = "Reconnecting to the source";
    else if (state === "failed") problemText = "Source failed";
    else if (state === "ended") problemText = "Source ended";
    if (problemText && s.status.error) problemText += ": " + s.status.error;
    problem.hidden = !problemText;
    problem.textContent = problemText;

    const notes = [];
    if (s.restarted_at && bridgeNow() - s.restarted_at < RESTART_NOTE_S) {
      notes.push("daemon restarted " + new Date(s.restarted_at * 1000).toLocaleTimeString([], { hour12: false }));
    }
    if (s.gaps) notes.push(`${s.gaps} message${s.gaps === 1 ? "" : "s"} lost`);
    if (s.model && s.model.name) notes.push("model " + s.model.name);

    const quietS = s.updated_at ? bridgeNow() - s.updated_at : 0;
    panel.classList.toggle("quiet", quietS > QUIET_S);
    if (quietS > QUIET_S) notes.unshift("no scores for " + ago(quietS));
    panel.querySelector(".note").textContent = notes.join(" \u00b7 ");

    renderHealth(panel, s);
    renderTiles(panel.querySelector(".tiles"), s);
    renderBars(panel.querySelector(".bars"), s, MAX_BARS[$("streams").dataset.layout] || 8);
    renderTimeline(panel.querySelector(".timeline"), s);
    renderTracks(panel.querySelector(".recent"), s.tracks || []);
  }

  const LEVEL_FLOOR_DBFS = -60;  // the meter's empty end; 0 dBFS fills it

  // The last window's level, and dead air: "silent since" by this page's clock.
  function renderHealth(panel, s) {
    const level = panel.querySelector(".level");
    const rms = s.audio && typeof s.audio.rms_dbfs === "number" ? s.audio.rms_dbfs : null;
    level.hidden = rms === null;
    if (rms !== null) {
      const share = Math.max(0, Math.min(1, (rms - LEVEL_FLOOR_DBFS) / -LEVEL_FLOOR_DBFS));
      level.querySelector(".meter-fill").style.width = (share * 100).toFixed(1) + "%";
      // EBU R128 short-term loudness, where the daemon measures it ([health] loudness)
      const lufs = typeof s.audio.short_term_lufs === "number" ? s.audio.short_term_lufs : null;
      level.querySelector(".level-value").textContent =
        (rms <= -120 ? "silence" : rms.toFixed(0) + " dBFS") +
        (lufs !== null && lufs > -70 ? " · " + lufs.toFixed(1) + " LUFS" : "");
      level.classList.toggle("low", Boolean(s.silence) || rms <= -50);
    }
    const silence = panel.querySelector(".silence");
    const silent = Boolean(s.silence);
    panel.classList.toggle("silent", silent);
    silence.hidden = !silent;
    if (silent) {
      const since = typeof s.silence.since === "number"
        ? new Date((s.silence.since - view.offsetS) * 1000).toLocaleTimeString([], { hour12: false })
        : null;
      if (s.silence.cause === "tone") {  // dead air above the threshold: a stuck tone
        silence.textContent = (since ? "Stuck tone since " + since : "Stuck tone") +
          " (a steady tone, no music)";
      } else {
        const below = typeof s.silence.threshold_dbfs === "number"
          ? ` (below ${s.silence.threshold_dbfs} dBFS)` : "";
        silence.textContent = (since ? "Silent since " + since : "Silent") + below;
      }
    }
  }

  function minutesSeconds(seconds) {
    const whole = Math.max(0, Math.round(seconds));
    return Math.floor(whole / 60) + ":" + String(whole % 60).padStart(2, "0");
  }

  // The last tracks, newest first: title, length, the tags on for most of it.
  function renderTracks(box, tracks) {
    box.hidden = tracks.length === 0;
    const list = box.querySelector(".tracks");
    const items = tracks.slice().reverse().map((t) => {
      const item = el("li", "track");
      item.append(el("span", "track-title", t.title || "(untitled)"),
        el("span", "track-length", minutesSeconds(t.end_s - t.start_s)));
      const tags = el("span", "track-tags");
      for (const tag of t.active) {
        const chip = el("span", "chip", tag);
        chip.style.background = tagColor(tag);
        tags.append(chip);
      }
      if (!t.active.length) tags.textContent = t.windows ? "no tag most of the time" : "";
      item.append(tags);
      return item;
    });
    list.replaceChildren(...items);
  }

  function renderTiles(box, s) {
    // Active tags in the model's tag order, so tiles do not jump around as scores move.
    const order = new Map(s.tags.map((tag, i) => [tag, i]));
    const active = s.active.slice().sort((a, b) => (order.get(a) ?? 1e9) - (order.get(b) ?? 1e9));
    const existing = new Map();
    for (const node of box.children) existing.set(node.dataset.tag ?? "", node);
    const wanted = active.length ? active : [null];
    for (const [key, node] of existing) {
      if (!wanted.includes(key === "" ? null : key)) node.remove();
    }
    const nodes = [];
    for (const tag of wanted) {
      const key = tag === null ? "" : tag;
      let node = existing.get(key);
      if (!node || !node.isConnected) {
        node = el("div", tag === null ? "tile none" : "tile");
        if (tag === null) {
          node.textContent = "no active tag";
        } else {
          node.dataset.tag = tag;
          node.style.background = tagColor(tag);
          node.append(el("span", "name", tag), el("span", "score"));
        }
      }
      if (tag !== null) {
        const i = order.get(tag);
        const ratio = i === undefined ? null : strength(s, i);
        node.querySelector(".score").textContent = i === undefined || s.smoothed[i] === undefined
          ? "" : ratio === null ? s.smoothed[i].toFixed(2) : ratio.toFixed(1) + "\u00d7";
        node.title = i === undefined || s.smoothed[i] === undefined ? "" : scoreNote(s, i);
      }
      nodes.push(node);
    }
    placeInOrder(box, nodes, box.firstElementChild);
    // Many tags on at once: smaller tiles, so they still fit beside each other.
    box.dataset.count = String(Math.min(active.length, 5));
  }

  // How far a smoothed score stands above its tag's threshold (1 = at the threshold): what a
  // score means differs by tag (a sparse tag is on at 0.06, a frequent one only at 0.3), so
  // with thresholds known the tiles and bars show this ratio rather than the raw score.
  function strength(s, i) {
    const threshold = s.thresholds ? s.thresholds[i] : null;
    const score = s.smoothed[i];
    if (typeof threshold !== "number" || !(threshold > 0) || typeof score !== "number") return null;
    return score / threshold;
  }

  function scoreNote(s, i) {
    const threshold = s.thresholds ? s.thresholds[i] : null;
    const score = (s.smoothed[i] ?? 0).toFixed(3);
    return typeof threshold === "number"
      ? `score ${score}, threshold ${threshold.toFixed(3)}` : `score ${score}`;
  }

  const BAR_SPAN = 3;  // with thresholds: a full bar is 3x the threshold, the mark at a third

  function renderBars(box, s, maxBars) {
    let rows = s.tags.map((tag, i) => {
      const ratio = strength(s, i);
      const score = s.smoothed[i] ?? 0;
      return ratio === null
        ? { tag, i, key: score, width: score, mark: null, text: score.toFixed(2) }
        : { tag, i, key: ratio, width: ratio / BAR_SPAN, mark: 1 / BAR_SPAN,
            text: ratio.toFixed(1) + "\u00d7" };
    });
    if (rows.length > maxBars) {
      rows = rows.slice().sort((a, b) => b.key - a.key).slice(0, maxBars);
    }
    const active = new Set(s.active);
    while (box.children.length > rows.length) box.lastChild.remove();
    rows.forEach((row, i) => {
      let node = box.children[i];
      if (!node) {
        node = el("div", "bar");
        const track = el("div", "track");
        track.append(el("div", "fill"), el("div", "mark"));
        node.append(el("span", "name"), track, el("span", "value"));
        box.appendChild(node);
      }
      const on = active.has(row.tag);
      node.classList.toggle("on", on);
      node.dataset.tag = row.tag;
      node.querySelector(".name").textContent = row.tag;
      const fill = node.querySelector(".fill");
      fill.style.width = (Math.max(0, Math.min(1, row.width)) * 100).toFixed(1) + "%";
      fill.style.background = on ? tagColor(row.tag, 50) : "";
      const mark = node.querySelector(".mark");
      mark.hidden = row.mark === null || row.mark === undefined;
      if (!mark.hidden) mark.style.left = (row.mark * 100).toFixed(1) + "%";
      node.querySelector(".value").textContent = row.text;
      node.title = scoreNote(s, row.i);
    });
  }

  function renderTimeline(box, s) {
    const canvas = box.querySelector("canvas");
    const now = bridgeNow();
    const start = now - view.historyS;
    const minutes = Math.round(view.historyS / 60);
    box.querySelector(".axis-start").textContent = minutes >= 1 ? `\u2212${minutes} min` : `\u2212${Math.round(view.historyS)} s`;

    // Rows: the tags on at some time in the window, the most recently on first.
    const lastOn = new Map();
    for (const [t, tags] of s.history) {
      if (t + BIN_S < start) continue;
      for (const tag of tags) lastOn.set(tag, t);
    }
    const rows = [...lastOn.keys()]
      .sort((a, b) => lastOn.get(b) - lastOn.get(a) || a.localeCompare(b))
      .slice(0, MAX_TIMELINE_ROWS);
    rows.sort((a, b) => {
      const ia = s.tags.indexOf(a);
      const ib = s.tags.indexOf(b);
      return (ia < 0 ? 1e9 : ia) - (ib < 0 ? 1e9 : ib) || a.localeCompare(b);
    });

    const ratio = window.devicePixelRatio || 1;
    const cssWidth = Math.max(200, canvas.clientWidth || box.clientWidth || 600);
    const cssHeight = Math.max(1, rows.length) * ROW_PX + 8;
    if (canvas.width !== Math.round(cssWidth * ratio) || canvas.height !== Math.round(cssHeight * ratio)) {
      canvas.width = Math.round(cssWidth * ratio);
      canvas.height = Math.round(cssHeight * ratio);
      canvas.style.height = cssHeight + "px";
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, cssWidth, cssHeight);
    const plotX = LABEL_PX;
    const plotW = cssWidth - LABEL_PX - 6;

    // A faint line each minute.
    ctx.strokeStyle = "#263042";
    ctx.lineWidth = 1;
    for (let m = Math.ceil(start / 60) * 60; m < now; m += 60) {
      const x = plotX + ((m - start) / view.historyS) * plotW;
      ctx.beginPath();
      ctx.moveTo(x + 0.5, 0);
      ctx.lineTo(x + 0.5, cssHeight);
      ctx.stroke();
    }
    ctx.textBaseline = "middle";
    ctx.font = "600 21px system-ui, 'DejaVu Sans', sans-serif";
    if (!rows.length) {
      ctx.fillStyle = "#a9b3c4";
      ctx.fillText(`no tag active in the last ${minutes >= 1 ? minutes + " min" : Math.round(view.historyS) + " s"}`, 12, cssHeight / 2);
      return;
    }
    const rowOf = new Map(rows.map((tag, i) => [tag, i]));
    rows.forEach((tag, i) => {
      ctx.fillStyle = "#e8edf5";
      ctx.fillText(tag, 8, 4 + i * ROW_PX + ROW_PX / 2, LABEL_PX - 16);
    });
    const binW = Math.max(1, (BIN_S / view.historyS) * plotW + 0.5);
    for (const [t, tags] of s.history) {
      if (t + BIN_S < start) continue;
      const x = plotX + ((t - start) / view.historyS) * plotW;
      for (const tag of tags) {
        const i = rowOf.get(tag);
        if (i === undefined) continue;
        ctx.fillStyle = tagColor(tag, 52);
        ctx.fillRect(x, 4 + i * ROW_PX + 3, binW, ROW_PX - 6);
      }
    }
  }

  connect();
  render();
})();
