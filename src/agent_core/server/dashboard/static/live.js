// agent-core dashboard: live updates with no build step and no third-party code.
//
// The element with data-live-src="/ui/live?..." names a server-sent event stream. Each
// "changed" event makes every element with data-live-block="NAME" be fetched again from the
// page's own URL with ?partial=NAME (the server renders just that block of the page) and
// replaced by the answer. Refreshes triggered while one runs are merged into one more, open
// <details> stay open, and a 401 (the sign-in ended) reloads the page to the sign-in form.
(function () {
  "use strict";

  var root = document.querySelector("[data-live-src]");
  var status = document.querySelector("[data-live-status]");
  var labels = { on: "Live", off: "Reconnecting…" };

  function setStatus(state) {
    if (!status) return;
    status.setAttribute("data-state", state);
    status.textContent = labels[state];
  }

  if (!root || !window.EventSource || !window.fetch) {
    if (status) status.hidden = true;
    return;
  }

  var running = false;
  var pending = false;
  var refreshes = 0;

  function partialUrl(name) {
    var url = new URL(window.location.href);
    url.searchParams.set("partial", name);
    return url.toString();
  }

  function openDetails(block) {
    var open = [];
    block.querySelectorAll("details").forEach(function (d, i) {
      if (d.open) open.push(i);
    });
    return open;
  }

  function reopen(block, open) {
    var all = block.querySelectorAll("details");
    open.forEach(function (i) {
      if (all[i]) all[i].open = true;
    });
  }

  async function refreshBlock(block) {
    var response = await fetch(partialUrl(block.getAttribute("data-live-block")), {
      credentials: "same-origin",
      headers: { "X-Live-Refresh": "1" },
    });
    if (response.status === 401) {
      window.location.reload();
      return;
    }
    if (!response.ok) return;
    var holder = document.createElement("template");
    holder.innerHTML = (await response.text()).trim();
    var fresh = holder.content.firstElementChild;
    if (!fresh) return;
    var open = openDetails(block);
    block.replaceWith(fresh);
    reopen(fresh, open);
    fresh.classList.add("live-flash");
  }

  async function refresh() {
    if (running) {
      pending = true;
      return;
    }
    running = true;
    try {
      var blocks = Array.prototype.slice.call(document.querySelectorAll("[data-live-block]"));
      for (var i = 0; i < blocks.length; i++) {
        await refreshBlock(blocks[i]);
      }
      refreshes += 1;
      document.body.setAttribute("data-live-refreshes", String(refreshes));
    } catch (err) {
      setStatus("off");
    } finally {
      running = false;
      if (pending) {
        pending = false;
        refresh();
      }
    }
  }

  var source = new EventSource(root.getAttribute("data-live-src"));
  var lost = false;
  source.addEventListener("open", function () {
    setStatus("on");
    // Events sent while the stream was down are gone: catch up once.
    if (lost) refresh();
    lost = false;
  });
  source.addEventListener("changed", function () {
    refresh();
  });
  source.addEventListener("error", function () {
    // EventSource reconnects by itself (the server asks for 2 s) unless the answer was an error.
    lost = true;
    setStatus("off");
  });
  window.addEventListener("pagehide", function () {
    source.close();
  });
})();
