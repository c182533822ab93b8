// The pages' link to the dashboard server (dashboard.js, venue.js): one WebSocket on /ws of this
// page's own server, opened again after it closes (back-off from retryMinMs, doubling to
// retryMaxMs, reset once open), and closed when nothing came for silentMs while open (the
// server ticks every second: a silent socket is a dead link, even if the browser thinks it
// open). Each message is parsed JSON handed to onMessage.
"use strict";

window.streamtagFeed = ({ onOpen, onMessage, onClose, retryMinMs = 500, retryMaxMs = 5000,
                          silentMs = 5000 }) => {
  let socket = null;
  let open = false;
  let retryMs = retryMinMs;
  let lastHeardMs = 0;

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(scheme + "//" + location.host + "/ws");
    socket.onopen = () => {
      open = true;
      retryMs = retryMinMs;
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
      retryMs = Math.min(retryMs * 2, retryMaxMs);
    };
  }

  setInterval(() => {
    if (socket && open && Date.now() - lastHeardMs > silentMs) socket.close();
  }, 1000);
  connect();
};
