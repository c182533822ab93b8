// What the live pages (dashboard.js, venue.js) share: their link to the dashboard server, the
// rules that fold its messages into the page's view, batched drawing, and two DOM helpers.
// Loaded before the page's own script; defines window.streamtagPage and nothing else.
"use strict";

(() => {
  const RETRY_MIN_MS = 500;
  const RETRY_MAX_MS = 5000;
  const SILENT_SOCKET_MS = 5000; // no tick for this long: the socket is dead even if open

  // One WebSocket on /ws of this page's own server, opened again after it closes (back-off from
  // RETRY_MIN_MS, doubling to RETRY_MAX_MS, reset once open), and closed when nothing came for
  // SILENT_SOCKET_MS while open (the server ticks every second: a silent socket is a dead link,
  // even if the browser thinks it open). Each message is parsed JSON handed to onMessage.
  function openFeed({ onOpen, onMessage, onClose }) {
    let socket = null;
    let open = false;
    let retryMs = RETRY_MIN_MS;
    let lastHeardMs = 0;

    function connect() {
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      socket = new WebSocket(scheme + "//" + location.host + "/ws");
      socket.onopen = () => {
        open = true;
        retryMs = RETRY_MIN_MS;
        lastHeardMs = Date.now();
        onOpen();
      };
      socket.onmessage = (event) => {
        lastHeardMs = Date.now();
        onMessage(JSON.parse(event.data));
      };
      socket.onclose = () => {
        socket = null;
        open = false;
        setTimeout(connect, retryMs);
        onClose(retryMs);  // how long until the next try
        retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
      };
    }

    setInterval(() => {
      if (socket && open && Date.now() - lastHeardMs > SILENT_SOCKET_MS) socket.close();
    }, 1000);
    connect();
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A page fed by the bridge (see server.py for the message types). The page owns `view`
  // (streams: a Map of id -> stream, offsetS, daemon, connected) and says what its messages
  // mean beyond what both pages do:
  //   blankStream(id)                  a stream not heard of before
  //   onHello(msg), onSnapshot(msg)    after the bridge's clock and the daemon's liveness
  //   onRestart(s, receivedAt)         a new daemon session for stream s
  //   onMessage(s, h, b, m, receivedAt) a protocol message for s (not a heartbeat)
  //   onClose(retryMs)                 the socket closed; the next try in retryMs
  // Every message and every change of the link draws again (render, batched to a frame).
  function live({ view, blankStream, render, onHello, onSnapshot, onRestart, onMessage,
                  onClose }) {
    let pending = false;
    function scheduleRender() {
      if (pending) return;
      pending = true;
      const run = () => { pending = false; render(); };
      if (document.hidden) setTimeout(run, 250); else requestAnimationFrame(run);
    }

    const bridgeNow = () => Date.now() / 1000 + view.offsetS;

    function stream(id) {
      let s = view.streams.get(id);
      if (!s) {
        s = blankStream(id);
        view.streams.set(id, s);
      }
      return s;
    }

    // The same rules as FeedState.apply_message, so a page and a late-joining page agree.
    function applyMessage(m, receivedAt) {
      const h = m.header;
      view.daemon = Object.assign({}, view.daemon, { seen: true, alive: true, age_s: 0 });
      if (h.msg_type === "heartbeat") return;
      const s = stream(h.stream);
      if (m.restarted || (s.session !== null && s.session !== h.session)) onRestart(s, receivedAt);
      s.session = h.session;
      onMessage(s, h, m.body, m, receivedAt);
    }

    // A hello in pieces (the bridge sends a big one so): the views gathered until the last
    // piece, the messages that come meanwhile set aside. A piece's views already hold what
    // was sent before it, so what was set aside for its streams is dropped; the rest is
    // applied after the hello.
    let gathering = null;

    function gather(msg) {
      if (msg.type === "streams") {
        Object.assign(gathering.hello.streams, msg.streams);
        gathering.held = gathering.held.filter((m) =>
          m.type !== "message" || !Object.hasOwn(msg.streams, m.message.header.stream));
        for (const m of gathering.held) {
          if (m.type === "snapshot") for (const id of Object.keys(msg.streams)) delete m.streams[id];
        }
        if (msg.more) return;
        const { hello, held } = gathering;
        gathering = null;
        handle(hello);
        for (const m of held) handle(m);
      } else if (msg.type === "message" || msg.type === "snapshot") {
        gathering.held.push(msg);
      } else {
        handle(msg);
      }
    }

    function handle(msg) {
      if (gathering) { gather(msg); return; }
      if (msg.type === "hello" && msg.more) {
        gathering = { hello: Object.assign({}, msg, { more: false }), held: [] };
        return;
      }
      if (msg.type === "hello" || msg.type === "tick") {
        view.offsetS = msg.now - Date.now() / 1000;
        view.daemon = msg.daemon;
      }
      if (msg.type === "hello") onHello(msg);
      else if (msg.type === "message") applyMessage(msg.message, msg.received_at);
      else if (msg.type === "snapshot") onSnapshot(msg);
      scheduleRender();
    }

    function connect() {
      openFeed({
        onOpen: () => { view.connected = true; scheduleRender(); },
        onMessage: handle,
        onClose: (retryMs) => {
          gathering = null;  // a new socket starts with a new hello
          view.connected = false;
          onClose(retryMs);
          scheduleRender();
        },
      });
    }

    return { scheduleRender, bridgeNow, stream, connect };
  }

  window.streamtagPage = { $: (id) => document.getElementById(id), el, live };
})();
