// The alerts page, live: follows /console/alerts/stream (the API's alert stream, by the session
// cookie) and, when an alert appears or changes, fetches the page again and swaps in its list.
// No reload: what an officer is typing in an answer is kept. Served from 'self' (the console's CSP).
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!document.getElementById("alerts") || !window.EventSource || !window.fetch) {
    return;
  }
  var pending = null;

  function say(text) {
    live.textContent = text;
  }

  // The stream starts with every alert still waiting: those the page already shows as they are change nothing.
  function shown(alert) {
    var row = document.querySelector('tr[data-alert="' + CSS.escape(String(alert.id)) + '"]');
    return row !== null && row.dataset.state === alert.state && row.dataset.tier === String(alert.tier);
  }

  // What a list shows, row by row: a fresh copy that shows the same is not swapped in.
  function signature(list) {
    return Array.prototype.map
      .call(list.querySelectorAll("tr[data-alert]"), function (row) {
        return row.dataset.alert + ":" + row.dataset.state + ":" + row.dataset.tier;
      })
      .join(",");
  }

  function refresh() {
    pending = null;
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (reply) {
        if (!reply.ok || reply.redirected) {
          throw new Error("signed out or refused");
        }
        return reply.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("alerts");
        var current = document.getElementById("alerts");
        if (fresh === null || current === null || signature(fresh) === signature(current)) {
          return;
        }
        var focused = document.activeElement;
        var focusedAlert = focused && focused.classList.contains("ack-message") ? focused.dataset.alert : null;
        var caret = focusedAlert !== null ? [focused.selectionStart, focused.selectionEnd] : null;
        current.querySelectorAll("input.ack-message").forEach(function (input) {
          var twin = fresh.querySelector('input.ack-message[data-alert="' + CSS.escape(input.dataset.alert) + '"]');
          if (twin !== null && input.value) {
            twin.setAttribute("value", input.value);
          }
        });
        var adopted = document.adoptNode(fresh);
        current.replaceWith(adopted);
        if (focusedAlert !== null) {
          var again = adopted.querySelector('input.ack-message[data-alert="' + CSS.escape(focusedAlert) + '"]');
          if (again !== null) {
            again.focus();
            again.setSelectionRange(caret[0], caret[1]); // the officer types on where they were
          }
        }
      })
      .catch(function () {
        say("Live updates stopped (signed out?): reload the page.");
      });
  }

  function soon() {
    if (pending === null) {
      pending = window.setTimeout(refresh, 150);
    }
  }

  var source = new EventSource("/console/alerts/stream");
  source.addEventListener("open", function () {
    say("Live: new alerts appear here by themselves.");
    soon(); // whatever changed between this page and the stream's start
  });
  source.addEventListener("alert", function (event) {
    var alert = null;
    try {
      alert = JSON.parse(event.data);
    } catch (err) {
      alert = null;
    }
    if (alert === null || !shown(alert)) {
      soon();
    }
  });
  source.addEventListener("error", function () {
    say(source.readyState === EventSource.CLOSED ? "Live updates stopped: reload the page." : "Live: reconnecting...");
  });
})();
