// The ashat dashboard's only script: progressive, every page works without it.
//
// - A deployment page (#deployment[data-live]) asks /deployments/<id>/live for news while the
//   deployment moves (every data-poll ms, as the server says): it swaps in the fleet progress
//   the server rendered, and when the state or the audit log changed, re-reads the page and
//   swaps its [data-refresh] sections in place. No page reload.
// - Filter forms (form[data-autosubmit]) submit when a select changes.
// - Action forms (form[data-busy]) disable their button once sent (no double approval).
(function () {
  "use strict";

  var MAX_BACKOFF_MS = 10000;

  function say(text) {
    var el = document.getElementById("live-status");
    if (el) el.textContent = text;
  }

  function clock() {
    return new Date().toLocaleTimeString();
  }

  async function refreshSections() {
    var res = await fetch(location.href, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "text/html" },
    });
    if (!res.ok) return;
    var doc = new DOMParser().parseFromString(await res.text(), "text/html");
    document.querySelectorAll("[data-refresh]").forEach(function (old) {
      var fresh = doc.getElementById(old.id);
      if (fresh) old.replaceWith(document.adoptNode(fresh));
    });
  }

  function follow(root) {
    var url = root.dataset.live;
    var version = root.dataset.version;
    var failures = 0;

    function later(ms) {
      window.setTimeout(tick, ms);
    }

    async function tick() {
      var data;
      try {
        var res = await fetch(url, {
          credentials: "same-origin",
          cache: "no-store",
          headers: { Accept: "application/json" },
        });
        if (res.status === 401) {
          say("Your session ended: reload the page to sign in again.");
          return;
        }
        data = await res.json();
        if (!res.ok) throw new Error(data.error || res.statusText);
      } catch (err) {
        failures += 1;
        say("No news (" + err.message + "); trying again…");
        later(Math.min(MAX_BACKOFF_MS, 1000 * Math.pow(2, failures)));
        return;
      }
      failures = 0;
      var body = document.getElementById("rollout-body");
      if (body && data.html && typeof data.html.rollout === "string") {
        body.innerHTML = data.html.rollout; // rendered and escaped by the server
      }
      if (data.version !== version) {
        version = data.version;
        root.dataset.version = version;
        try {
          await refreshSections();
        } catch (err) {
          /* the next tick tries again */
        }
      }
      if (data.poll_ms) {
        say("Live · updated " + clock());
        later(data.poll_ms);
      } else {
        say("Finished: " + data.state + " · " + clock());
      }
    }

    if (root.dataset.poll) {
      say("Live");
      later(Number(root.dataset.poll));
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelector("#deployment[data-live]");
    if (live) follow(live);

    document.querySelectorAll("form[data-autosubmit] select").forEach(function (select) {
      select.addEventListener("change", function () {
        select.form.requestSubmit();
      });
    });

    document.querySelectorAll("form[data-busy]").forEach(function (form) {
      form.addEventListener("submit", function () {
        form.querySelectorAll("button[type=submit]").forEach(function (button) {
          button.disabled = true;
          button.textContent = "Working…";
        });
      });
    });
  });
})();
