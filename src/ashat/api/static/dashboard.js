// The ashat dashboard's only script: progressive, every page works without it.
//
// - A deployment page (#deployment[data-live]) asks /deployments/<id>/live for news while the
//   deployment moves (every data-poll ms, as the server says): it swaps in the fleet progress
//   the server rendered, and when the state or the audit log changed, re-reads the page and
//   swaps its [data-refresh] sections in place. No page reload.
// - Filter forms (form[data-autosubmit]) submit when a select changes.
// - Action forms (form[data-busy]) disable their button once sent (no double approval).
// - Passkeys: form[data-webauthn-create] registers one (navigator.credentials.create), and
//   form[data-webauthn-get] signs an approval statement with one (navigator.credentials.get,
//   the server's challenge being the statement's digest); each fills its hidden fields with
//   the browser's answer, base64url, and submits.
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

  function fromB64url(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) b64 += "=";
    var raw = atob(b64);
    var out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out.buffer;
  }

  function toB64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var raw = "";
    for (var i = 0; i < bytes.length; i++) raw += String.fromCharCode(bytes[i]);
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function passkeyForm(form, attribute, run) {
    var status = form.querySelector("#passkey-status");
    form.addEventListener("submit", async function (event) {
      if (form.dataset.signed === "yes") return;
      event.preventDefault();
      if (!window.PublicKeyCredential) {
        if (status) status.textContent = "This browser has no passkeys (WebAuthn).";
        return;
      }
      try {
        if (status) status.textContent = "Waiting for your passkey…";
        await run(JSON.parse(form.getAttribute(attribute)), form);
        form.dataset.signed = "yes";
        form.submit();
      } catch (err) {
        if (status) status.textContent = "The passkey did not sign: " + err.message;
      }
    });
  }

  async function register(options, form) {
    options.challenge = fromB64url(options.challenge);
    options.user.id = fromB64url(options.user.id);
    options.excludeCredentials.forEach(function (c) { c.id = fromB64url(c.id); });
    var cred = await navigator.credentials.create({ publicKey: options });
    form.elements.attestation_object.value = toB64url(cred.response.attestationObject);
    form.elements.client_data_json.value = toB64url(cred.response.clientDataJSON);
  }

  async function sign(options, form) {
    options.challenge = fromB64url(options.challenge);
    options.allowCredentials.forEach(function (c) { c.id = fromB64url(c.id); });
    var cred = await navigator.credentials.get({ publicKey: options });
    form.elements.credential_id.value = toB64url(cred.rawId);
    form.elements.authenticator_data.value = toB64url(cred.response.authenticatorData);
    form.elements.client_data_json.value = toB64url(cred.response.clientDataJSON);
    form.elements.signature.value = toB64url(cred.response.signature);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-webauthn-create]").forEach(function (form) {
      passkeyForm(form, "data-webauthn-create", register);
    });
    document.querySelectorAll("form[data-webauthn-get]").forEach(function (form) {
      passkeyForm(form, "data-webauthn-get", sign);
    });
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
