// Live updates of a run's page. The server renders (and escapes) every fragment; this only
// puts each where it belongs. Without JavaScript the page is still complete as it was served.
(function () {
  "use strict";
  var script = document.currentScript;
  var url = script && script.getAttribute("data-live");
  if (!url || !window.EventSource) return;
  var tail = Number(script.getAttribute("data-tail")) || 200;
  // #measure: keep when each line arrived, for the latency measurement.
  var measure = location.hash === "#measure";
  window.nixtestSeen = [];
  var byId = function (id) { return document.getElementById(id); };

  function setStatus(s) {
    var e = byId("run-status");
    if (!e) return;
    e.textContent = s;
    e.className = "badge " + s;
  }

  function atBottom(el) {
    return el.scrollHeight - el.scrollTop - el.clientHeight < 40;
  }

  var source = new EventSource(url);
  source.onmessage = function (m) {
    var msg = JSON.parse(m.data);
    var el;
    switch (msg.t) {
      case "snapshot":
        byId("profiles").innerHTML = msg.html;
        setStatus(msg.status);
        break;
      case "add":
        var waiting = byId("waiting");
        if (waiting) waiting.remove();
        if (!byId("p" + /id="p(\d+)"/.exec(msg.html)[1])) {
          byId("profiles").insertAdjacentHTML("beforeend", msg.html);
        }
        break;
      case "sum":
        el = byId("p" + msg.p + "-sum");
        if (el) el.innerHTML = msg.html;
        break;
      case "line":
        el = byId("p" + msg.p + "-log");
        if (!el) break;
        var follow = atBottom(el);
        el.insertAdjacentHTML("beforeend", msg.html);
        while (el.childElementCount > tail) el.firstElementChild.remove();
        if (follow) el.scrollTop = el.scrollHeight;
        var count = byId("p" + msg.p + "-count");
        if (count) count.textContent = msg.total;
        if (measure) window.nixtestSeen.push([msg.p, msg.n, msg.h, Date.now()]);
        break;
      case "mark":
        el = byId("p" + msg.p + "-log");
        if (!el) break;
        msg.lines.forEach(function (n) {
          var l = el.querySelector('[data-n="' + Number(n) + '"]');
          if (l) l.classList.add("mark");
        });
        break;
      case "end":
        setStatus(msg.status);
        source.close();
        break;
    }
  };
})();
