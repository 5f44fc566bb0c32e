// The web view's only script. A page of a project listens to the project's event stream
// (/mail/<slug>/_/events) and, on each event, fetches the page again with X-Live-Fragment: 1
// and swaps the server-rendered live part in. No framework, no build step, no inline script
// (the Content-Security-Policy allows scripts from this origin's files only).
"use strict";
(function () {
  const events = document.body.dataset.events;
  const live = document.getElementById("live");
  const status = document.getElementById("live-status");
  if (!events || !live || !window.EventSource) return;

  let busy = false;
  let again = false;
  let timer = null;

  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const response = await fetch(window.location.href, {
        headers: { "X-Live-Fragment": "1" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (response.ok) {
        live.innerHTML = await response.text(); // server-rendered, escaped and sanitised HTML
        document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
      }
    } catch (err) {
      // the stream's reconnection brings the page up to date again
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }

  function soon() {
    if (timer === null) timer = setTimeout(function () { timer = null; refresh(); }, 50);
  }

  function connect() {
    const source = new EventSource(events);
    source.addEventListener("ready", function () {
      document.body.dataset.live = "on";
      if (status) status.classList.add("on");
    });
    source.addEventListener("mail", soon);
    source.addEventListener("state", soon);
    source.onerror = function () {
      document.body.dataset.live = "off";
      if (status) status.classList.remove("on");
      // EventSource reconnects by itself; what was missed meanwhile is fetched when it is back
      source.addEventListener("ready", soon, { once: true });
    };
  }
  connect();
})();
