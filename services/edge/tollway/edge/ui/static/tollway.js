/* Tollway dashboard: the live parts (polling small JSON endpoints, or one event stream) and a
   confirmation on destructive forms. Pages work without it; it only keeps them current. */
(function () {
  "use strict";
  var POLL_MS = 2000;

  function poll(url, every, apply) {
    var indicator = document.querySelector("[data-live-indicator]");
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } })
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
        .then(function (body) { apply(body); if (indicator) { indicator.classList.add("on"); } })
        .catch(function () { if (indicator) { indicator.classList.remove("on"); } })
        .then(function () { setTimeout(tick, every); });
    }
    tick();
  }

  function text(tag, value, cls) {
    var el = document.createElement(tag);
    el.textContent = value;
    if (cls) { el.className = cls; }
    return el;
  }

  function routeHealth(root) {
    poll(root.dataset.url, POLL_MS, function (body) {
      Object.keys(body.channels).forEach(function (id) {
        var h = body.channels[id];
        root.querySelectorAll('[data-channel-id="' + CSS.escape(id) + '"]').forEach(function (row) {
          var badge = row.querySelector("[data-health]");
          if (badge) {
            badge.textContent = h.state.replace("_", "-");
            badge.className = "badge health-" + h.state;
          }
          var reason = row.querySelector("[data-health-reason]");
          if (reason) { reason.textContent = h.reason || ""; }
        });
      });
    });
  }

  function breakers(table) {
    poll(table.dataset.url, POLL_MS, function (body) {
      var keys = body.breakers.map(function (b) { return b.key; }).sort().join(" ");
      var open = body.breakers.filter(function (b) { return b.open; })
        .map(function (b) { return b.key; }).sort().join(" ");
      var shownKeys = table.dataset.keys.split(" ").filter(Boolean).sort().join(" ");
      var shownOpen = table.dataset.open.split(" ").filter(Boolean).sort().join(" ");
      // Rows carry reset forms with their CSRF token: redraw them from the server on change.
      if (keys !== shownKeys || open !== shownOpen) { window.location.reload(); }
    });
  }

  function alerts(table) {
    var body = table.querySelector("tbody");
    poll(table.dataset.url, POLL_MS, function (data) {
      if (!data.alerts.length) { return; }
      body.textContent = "";
      data.alerts.forEach(function (a) {
        var tr = document.createElement("tr");
        tr.appendChild(text("td", a.occurred_at.replace("T", " ").slice(0, 19)));
        var sev = document.createElement("td");
        sev.appendChild(text("span", a.severity, "badge sev-" + a.severity));
        tr.appendChild(sev);
        tr.appendChild(text("td", a.scope + ":" + a.scope_id));
        tr.appendChild(text("td", a.metric));
        tr.appendChild(text("td", a.value + " / " + a.threshold, "num"));
        tr.appendChild(text("td", a.message));
        body.appendChild(tr);
      });
    });
  }

  function research(section) {
    if (section.dataset.running !== "true" || !window.EventSource) { return; }
    var bar = section.querySelector("progress");
    var done = section.querySelector("[data-done]");
    var stage = section.querySelector("[data-stage]");
    var stream = new EventSource(section.dataset.events);
    stream.addEventListener("stage", function (e) {
      if (stage) { stage.textContent = JSON.parse(e.data).stage; }
    });
    stream.addEventListener("call_finished", function (e) {
      var p = JSON.parse(e.data);
      if (bar) { bar.value = p.calls; }
      if (done) { done.textContent = p.calls; }
    });
    stream.addEventListener("finished", function () {
      stream.close();
      window.location.reload();
    });
    stream.onerror = function () {
      stream.close();
      setTimeout(function () { window.location.reload(); }, 2000);
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(function (el) {
      var kind = el.dataset.live;
      if (kind === "route-health") { routeHealth(el); }
      if (kind === "breakers") { breakers(el); }
      if (kind === "alerts") { alerts(el); }
      if (kind === "research") { research(el); }
    });
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (e) {
        if (!window.confirm(form.dataset.confirm)) { e.preventDefault(); }
      });
    });
  });
}());
