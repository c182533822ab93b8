// The venue page: one stream's mood, full screen, fed by the bridge at /ws (see server.py for
// the message types). URL: /venue?stream=ID&theme=dark|light&minutes=10..30. No libraries, no
// network access beyond this page's own server. Text from the feed (stream ids, titles, words)
// is only ever set as textContent.
"use strict";

(() => {
  const SLICE_S = 5;             // one point of the mood's course per slice: as the bridge's
  const COURSE_S = 30 * 60;      // MOOD_SLICE_S and MOOD_COURSE_S (feed.py)
  const MAX_POINTS = COURSE_S / SLICE_S + 2;
  const RIBBON_EVERY_MS = 5000;  // the ribbon is slow: redrawn now and then, not per message
  const BRIDGED_S = 3 * SLICE_S; // a longer hole between two points is drawn as a hole
  const MAX_WORDS = 2;
  const MAX_GENRES = 2;
  const WAITING = "waiting for music";

  const params = new URLSearchParams(location.search);
  const wanted = params.get("stream") || null;       // null: the page chooses
  const theme = params.get("theme") === "light" ? "light" : "dark";
  const asked = Number.parseInt(params.get("minutes") ?? "", 10);
  const minutes = Number.isFinite(asked) ? Math.min(30, Math.max(10, asked)) : 20;
  // &genre=0 hides the genre line (a room whose model names genres it does not play)
  const showGenres = !["0", "off", "no", "false"].includes((params.get("genre") ?? "").toLowerCase());
  document.documentElement.dataset.theme = theme;

  const view = {
    streams: new Map(),          // id -> the bridge's view of the stream (FeedState.view)
    offsetS: 0,                  // bridge clock minus this browser's clock
    daemon: null,                // liveness from the last hello or tick
    connected: false,
    dropped: false,              // the socket closed once: "reconnecting" while it is down
    feed: [],                    // the daemon's publish endpoints, from the hello
    greeted: false,              // a hello came: the streams that exist are known
    chosen: null,                // the stream shown when the URL names none
  };

  const { $, el } = window.streamtagPage;
  const round3 = (x) => (typeof x === "number" ? Math.round(x * 1000) / 1000 : null);

  // The socket, the bridge's clock, the daemon's liveness and batched drawing: feed.js.
  const { scheduleRender, bridgeNow, stream, connect } = window.streamtagPage.live({
    view, blankStream, render,
    onHello: (msg) => {
      view.feed = Array.isArray(msg.feed) ? msg.feed : [];
      applyHello(msg);
      view.greeted = true;
      ribbonDue = true;
    },
    onSnapshot: (msg) => {
      // A snapshot carries tags only: it names streams, and their status when there is one.
      for (const [id, s] of Object.entries(msg.streams)) {
        const known = stream(id);
        if (s.status && !known.status) known.status = s.status;
      }
    },
    onRestart: (s) => {
      // A new daemon session: its mood is not known until its first scores.
      Object.assign(s, blankStream(s.id), { moods: s.moods });
    },
    onMessage: applyMessage,
    onClose: () => { view.dropped = true; },
  });

  // ---------------------------------------------------------------- state

  function blankStream(id) {
    return { id, session: null, status: null, updated_at: null, audio: null, mood: null,
             moods: [] };
  }

  // As FeedState._record_mood: the slice's last mood wins.
  function recordMood(s, t) {
    if (!s.mood) return;
    const start = Math.floor(t / SLICE_S) * SLICE_S;
    const words = s.mood.words || [];
    const point = [start, round3(s.mood.valence), round3(s.mood.arousal),
      s.audio ? round3(s.audio.energy) : null, words.length ? words[0] : null];
    const last = s.moods[s.moods.length - 1];
    if (last && last[0] === start) s.moods[s.moods.length - 1] = point;
    else s.moods.push(point);
    const oldest = t - COURSE_S - SLICE_S;
    while (s.moods.length && s.moods[0][0] < oldest) s.moods.shift();
    if (s.moods.length > MAX_POINTS) s.moods.splice(0, s.moods.length - MAX_POINTS);
  }

  // The rest of FeedState.apply_message, for what this page shows (feed.js did the daemon,
  // the session and a restart).
  function applyMessage(s, h, b, m, receivedAt) {
    switch (h.msg_type) {
      case "scores":
        s.audio = b.audio || null;
        s.mood = b.mood || null;
        s.updated_at = receivedAt;
        recordMood(s, receivedAt);
        break;
      case "status":
        s.status = b;
        break;
    }
  }

  // A hello replaces what the page knew, but a restarted bridge knows less than the page: the
  // older part of each mood's course, and streams it has not heard from yet, are kept.
  function applyHello(msg) {
    const streams = new Map();
    for (const [id, s] of Object.entries(msg.streams)) {
      const known = view.streams.get(id);
      const moods = Array.isArray(s.moods) ? s.moods : [];
      const first = moods.length ? moods[0][0] : msg.now;
      const older = known ? known.moods.filter((p) => p[0] < first) : [];
      streams.set(id, Object.assign(blankStream(id), s, { moods: [...older, ...moods] }));
    }
    for (const [id, s] of view.streams) if (!streams.has(id)) streams.set(id, s);
    view.streams = streams;
  }

  // ---------------------------------------------------------------- colours

  // The colour of a mood. The hue says where the mood lies on the valence/arousal plane, by
  // its angle, blended between four anchors at the quadrants' middles:
  //   calm and positive (valence > 0, arousal < 0)      teal-green  (hue 165)
  //   energetic and positive (valence > 0, arousal > 0) amber-orange (hue 35)
  //   tense, intense and negative (valence < 0, arousal > 0) red-magenta (hue 340)
  //   sad, low (valence < 0, arousal < 0)               blue-indigo (hue 235)
  // The saturation says how far from neutral it is (a mood at the centre is grey), the
  // lightness how much energy the audio has: brighter on the dark theme, deeper on the light.
  const HUE_ANCHORS = [[-135, 235], [-45, 165], [45, 35], [135, -20], [225, -125]];

  function moodHue(valence, arousal) {
    let angle = (Math.atan2(arousal, valence) * 180) / Math.PI;
    if (angle < -135) angle += 360;
    for (let i = 1; i < HUE_ANCHORS.length; i++) {
      const [a0, h0] = HUE_ANCHORS[i - 1];
      const [a1, h1] = HUE_ANCHORS[i];
      if (angle <= a1) return (((h0 + ((angle - a0) / (a1 - a0)) * (h1 - h0)) % 360) + 360) % 360;
    }
    return HUE_ANCHORS[0][1];
  }

  function moodColor(valence, arousal, energy) {
    const e = typeof energy === "number" ? Math.min(1, Math.max(0, energy)) : 0.5;
    const strength = Math.min(1, Math.hypot(valence, arousal));
    const saturation = 25 + 45 * strength;
    const lightness = theme === "light" ? 72 - 26 * e : 24 + 30 * e;
    return `hsl(${moodHue(valence, arousal).toFixed(1)}, ${saturation.toFixed(1)}%, ${lightness.toFixed(1)}%)`;
  }

  // The accent (the glow, the meter): the mood's hue at a steady lightness, so the bar stands
  // out from its track whatever the energy; in coarse steps, so that the full-screen glow
  // repaints when the mood moves, not whenever its last decimal does.
  function accentColor(mood) {
    if (!mood || !mood.words || !mood.words.length || typeof mood.valence !== "number" ||
        typeof mood.arousal !== "number") return "";  // nothing to judge: the neutral colour
    const strength = Math.round(Math.min(1, Math.hypot(mood.valence, mood.arousal)) * 10) / 10;
    const hue = Math.round(moodHue(mood.valence, mood.arousal) / 6) * 6;
    const lightness = theme === "light" ? 42 : 58;
    return `hsl(${hue}, ${35 + 50 * strength}%, ${lightness}%)`;
  }

  // ---------------------------------------------------------------- drawing

  // The stream to show: the URL's, else the first with a mood (and it stays while it has one),
  // else the one shown so far, else the first.
  function chosenStream() {
    if (wanted !== null) return view.streams.get(wanted) || null;
    const current = view.chosen !== null ? view.streams.get(view.chosen) : undefined;
    if (current && current.mood) return current;
    const ids = [...view.streams.keys()].sort();
    const id = ids.find((i) => view.streams.get(i).mood) ?? (current ? view.chosen : ids[0]);
    view.chosen = id ?? null;
    return id === undefined ? null : view.streams.get(id);
  }

  let shownStream = null;
  let shownAccent = "";

  function render() {
    const s = chosenStream();
    const d = view.daemon;
    // The source's own state: a sound card gone, a station down (its last mood kept, dimmed),
    // a stream that ended or failed (said instead of a mood that no longer plays).
    const source = s && s.status ? s.status.state : null;
    const feedLost = (view.dropped && !view.connected) || Boolean(d && d.seen && !d.alive);
    const lost = feedLost || source === "reconnecting";
    document.body.classList.toggle("lost", lost);
    $("reconnecting").hidden = !lost;
    $("reconnecting").textContent = feedLost ? "reconnecting" : "input lost — reconnecting";

    let state;
    if (view.greeted && d && !d.seen && !s) {
      state = "no-daemon";
      showLayer("no-daemon " + view.feed.join(" "), (layer) => {
        layer.append(el("p", "message small", "waiting for the daemon"),
          el("p", "detail", view.feed.join(", ")));
      });
    } else if (wanted !== null && !s && view.greeted) {
      state = "unknown";
      const ids = [...view.streams.keys()].sort();
      showLayer("unknown " + ids.join(" "), (layer) => {
        layer.append(el("p", "message", "no stream " + wanted),
          el("p", "detail", ids.length ? "streams: " + ids.join(", ") : "no streams yet"));
      });
    } else if (source === "ended" || source === "failed") {
      state = source;
      const why = source === "failed" && s.status.error ? String(s.status.error) : "";
      showLayer(`${source} ${s.id} ${why}`, (layer) => {
        layer.append(el("p", "message small", source === "ended" ? "the music stopped"
          : "no input"), el("p", "detail", `stream ${s.id} ${source}` + (why ? ": " + why : "")));
      });
    } else if (!s || (s.updated_at === null && !s.mood)) {
      state = "waiting";
      showMessage(WAITING);
    } else if (!s.mood) {
      state = "no-mood";
      showLayer("no-mood", (layer) => {
        layer.append(el("p", "message small", "no mood to show"),
          el("p", "detail", "the model names no moods, or the daemon's [mood] is off"));
      });
    } else if (!s.mood.words || !s.mood.words.length) {
      state = "waiting";
      showMessage(WAITING);
    } else {
      state = "mood";
      const words = s.mood.words.slice(0, MAX_WORDS);
      showLayer("words " + JSON.stringify(words), (layer) => {
        words.forEach((word, i) => {
          if (i) layer.append(" ");
          layer.append(el("span", "word", word));
        });
      });
    }
    document.body.dataset.state = state;
    document.body.dataset.stream = s ? s.id : "";

    const playing = state !== "ended" && state !== "failed";
    const accent = s && state === "mood" ? accentColor(s.mood) : "";
    if (accent !== shownAccent) {
      shownAccent = accent;
      if (accent) document.documentElement.style.setProperty("--mood", accent);
      else document.documentElement.style.removeProperty("--mood");
    }

    const meter = $("meter");
    const energy = s && playing && s.audio && typeof s.audio.energy === "number"
      ? Math.min(1, Math.max(0, s.audio.energy)) : null;
    meter.hidden = energy === null;
    if (energy !== null) {
      $("meter-fill").style.transform = `scaleX(${energy.toFixed(2)})`;
      meter.setAttribute("aria-valuenow", energy.toFixed(2));
    }
    $("title").textContent = s && s.status && s.status.title ? s.status.title : "";
    const genres = showGenres && s && s.mood && Array.isArray(s.mood.genres)
      ? s.mood.genres.slice(0, MAX_GENRES) : [];
    $("genres").hidden = !showGenres;
    $("genres").textContent = genres.join(" / ");

    if (ribbonDue || (s ? s.id : null) !== shownStream) {
      shownStream = s ? s.id : null;
      drawRibbon();
    }
  }

  function showMessage(text, className) {
    showLayer("message " + text, (layer) => {
      layer.append(el("p", "message" + (className ? " " + className : ""), text));
    });
  }

  // Cross-fades to new content only when it differs from what is shown.
  let shownKey = null;
  function showLayer(key, fill) {
    if (key === shownKey) return;
    shownKey = key;
    const [a, b] = $("stage").querySelectorAll(".words");
    const [current, next] = a.classList.contains("shown") ? [a, b] : [b, a];
    next.replaceChildren();
    fill(next);
    fitWords(next);
    current.classList.remove("shown");
    current.setAttribute("aria-hidden", "true");
    next.classList.add("shown");
    next.removeAttribute("aria-hidden");
  }

  // The words as large as the stage allows: on one line or, for two words, on two lines,
  // whichever is larger, never wider or taller than the stage. Type is at most 30 % of the
  // screen's height (landscape) or 40 % of its width (portrait): a single short word could be
  // larger still, but would no longer read as a word.
  function fitWords(layer) {
    const words = layer.querySelectorAll(".word");
    layer.dataset.fittedFor = window.innerWidth + "x" + window.innerHeight;
    if (!words.length) {
      layer.style.fontSize = "";
      delete layer.dataset.lines;
      return;
    }
    const stage = $("stage");
    const width = stage.clientWidth * 0.96;
    const height = stage.clientHeight * 0.9;  // air between the words and the title
    const landscape = window.innerWidth >= window.innerHeight;
    const cap = landscape ? window.innerHeight * 0.3 : window.innerWidth * 0.4;
    const REFERENCE_PX = 100;
    let best = { px: 0, lines: 1 };
    for (const lines of words.length > 1 ? [1, 2] : [1]) {
      layer.dataset.lines = String(lines);
      layer.style.fontSize = REFERENCE_PX + "px";
      const box = inkBox(layer);
      const px = Math.min(cap, (REFERENCE_PX * width) / box.width, (REFERENCE_PX * height) / box.height);
      if (px > best.px * 1.02) best = { px, lines };  // about equal: one line reads better
    }
    layer.dataset.lines = String(best.lines);
    layer.style.fontSize = Math.floor(best.px) + "px";
  }

  // The box the words' glyphs may take: their lines' boxes and the font's full height (taller
  // than the tight line height the two lines are set with).
  function inkBox(layer) {
    let { left, top, right, bottom } = layer.getBoundingClientRect();
    for (const word of layer.querySelectorAll(".word")) {
      const range = document.createRange();
      range.selectNodeContents(word);
      const r = range.getBoundingClientRect();
      left = Math.min(left, r.left);
      top = Math.min(top, r.top);
      right = Math.max(right, r.right);
      bottom = Math.max(bottom, r.bottom);
    }
    return { width: right - left, height: bottom - top };
  }

  let ribbonDue = true;
  function drawRibbon() {
    ribbonDue = false;
    const canvas = $("ribbon-canvas");
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (!w || !h) return;
    if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const style = getComputedStyle(document.documentElement);
    ctx.fillStyle = style.getPropertyValue("--track").trim() || "#161b24";
    ctx.fillRect(0, 0, w, h);
    $("axis-start").textContent = `\u2212${minutes} min`;
    const s = shownStream !== null ? view.streams.get(shownStream) : null;
    if (!s) return;
    const spanS = minutes * 60;
    const now = bridgeNow();
    const start = now - spanS;
    const x = (t) => ((t - start) / spanS) * w;
    const points = s.moods;
    const quiet = style.getPropertyValue("--muted").trim() || "#8d98ab";
    for (let i = 0; i < points.length; i++) {
      const [t, valence, arousal, energy, word] = points[i];
      const next = points[i + 1];
      const end = next ? Math.min(next[0], t + BRIDGED_S)
        : Math.max(t + SLICE_S, Math.min(now, t + BRIDGED_S));
      if (end <= start) continue;
      const x0 = Math.max(0, Math.floor(x(t)));
      const x1 = Math.min(w, Math.ceil(x(end)));
      if (x1 <= x0) continue;
      if (word === null || typeof valence !== "number" || typeof arousal !== "number") {
        // Nothing to judge (silence): a thin quiet line, not a colour.
        ctx.fillStyle = quiet;
        ctx.globalAlpha = 0.35;
        ctx.fillRect(x0, h * 0.45, x1 - x0, h * 0.1);
        ctx.globalAlpha = 1;
      } else {
        ctx.fillStyle = moodColor(valence, arousal, energy);
        ctx.fillRect(x0, 0, x1 - x0, h);
      }
    }
  }

  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      const shown = $("stage").querySelector(".words.shown");
      if (shown) fitWords(shown);
      drawRibbon();
    }, 100);
  });
  setInterval(() => { ribbonDue = true; scheduleRender(); }, RIBBON_EVERY_MS);

  connect();
  render();
})();
