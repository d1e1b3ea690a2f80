/* Leadline tracking snippet. ES5 syntax on purpose: a syntax error in an old browser cannot
   be caught, while everything at run time is feature-checked and wrapped in try/catch. */
(function (w, d) {
  try {
    if (w.leadline) return; // included twice: still one page view, one listener
    var K = ["source", "medium", "campaign", "term", "content"], RE = /^[0-9a-f]{32}$/;
    var ls = null, i;
    try { ls = w.localStorage; ls.getItem("ll_vid"); } catch (e) { ls = null; } // blocked storage throws
    function get(k) { try { return ls && ls.getItem(k); } catch (e) { return null; } }
    function put(k, v) { try { ls && ls.setItem(k, v); } catch (e) { /* quota */ } }
    function abs(u) { var a = d.createElement("a"); a.href = u; return a; }

    // currentScript is only set while this script first runs.
    var me = d.currentScript, all;
    if (!me && d.querySelectorAll) { all = d.querySelectorAll('script[src$="/t.js"]'); me = all[all.length - 1]; }
    if (!me || !me.src) return;
    var base = me.src.replace(/\/t\.js([?#].*)?$/, "");

    // Kept in both stores so losing one (cleared, capped by the browser) keeps the visitor.
    var vid = get("ll_vid"), c = w.crypto, m = (d.cookie || "").match(/(?:^|; )ll_vid=([^;]*)/);
    if (!RE.test(vid)) vid = m && m[1];
    if (!RE.test(vid)) {
      if (c && c.randomUUID) vid = c.randomUUID().replace(/-/g, ""); // secure contexts only
      else {
        var b = c && c.getRandomValues ? c.getRandomValues(new Uint8Array(16)) : [];
        for (vid = "", i = 0; i < 16; i++) vid += ((b[i] === undefined ? Math.random() * 256 : b[i]) | 256).toString(16).slice(1);
      }
    }
    put("ll_vid", vid);
    d.cookie = "ll_vid=" + vid + "; path=/; max-age=31536000; SameSite=Lax";

    var utm = null, q = w.location.search || "";
    for (i = 0; i < K.length; i++) {
      m = q.match(new RegExp("[?&]utm_" + K[i] + "=([^&#]*)"));
      if (m && m[1]) { utm = utm || {}; try { utm[K[i]] = decodeURIComponent(m[1].replace(/\+/g, " ")); } catch (e) { utm[K[i]] = m[1]; } }
    }
    // First touch: each part is taken from the first page that has it, then never changed.
    var ref = d.referrer || "", ft = null;
    try { ft = JSON.parse(get("ll_ft")); } catch (e) { /* corrupt: start again */ }
    if (!ft || typeof ft !== "object") ft = {};
    if (!ft.utm || !Object.keys(ft.utm).length) ft.utm = utm || {};
    if (!ft.referrer) ft.referrer = ref && abs(ref).host !== w.location.host ? ref : "";
    put("ll_ft", JSON.stringify({ utm: ft.utm, referrer: ft.referrer }));

    // text/plain keeps the request CORS-simple: no preflight, nothing for the site to set up.
    var body = JSON.stringify({ visitor_id: vid, url: w.location.href, referrer: ref, title: d.title || "", utm: utm || {} });
    var url = base + "/t", n = w.navigator, sent = false;
    try { sent = !!(n.sendBeacon && n.sendBeacon(url, w.Blob ? new Blob([body], { type: "text/plain" }) : body)); } catch (e) { /* fall back */ }
    if (!sent && w.fetch) {
      try {
        w.fetch(url, { method: "POST", body: body, keepalive: true, mode: "no-cors", headers: { "Content-Type": "text/plain" } })["catch"](function () {});
        sent = true;
      } catch (e) { /* nothing left to try */ }
    }
    w.leadline = { visitorId: vid, pageViewSent: sent };

    // Forms posting to Leadline carry the visitor, so its page views join the lead.
    function field(f, name, v) {
      var el = f.querySelector('input[name="' + name + '"]');
      if (!el) { el = d.createElement("input"); el.type = "hidden"; el.name = name; el.setAttribute("data-ll", ""); f.appendChild(el); }
      if (!el.value || el.hasAttribute("data-ll")) el.value = v || ""; // the site's own values win
    }
    function target(f) {
      // getAttribute, not f.action: an input named "action" shadows the property.
      var href = abs(f.getAttribute("action") || "").href;
      return href.indexOf(base + "/f/") === 0 ? href : null;
    }
    // A render token from the server, as the hosted page carries one: a submit sooner than
    // a human could fill the form in is dropped as a bot's.
    function stamp(f) {
      try {
        var href = target(f);
        if (!href || !w.fetch || f.hasAttribute("data-ll-ts")) return;
        f.setAttribute("data-ll-ts", "");
        var key = href.slice(base.length + 3).split(/[?#\/]/)[0];
        w.fetch(base + "/f/" + key + "/ts", { credentials: "omit" })
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (j) { if (j && j._ts) field(f, "_ts", j._ts); })["catch"](function () {});
      } catch (e) { /* the form still works without one */ }
    }
    function tag(f) {
      try {
        if (!target(f)) return;
        var u = utm || ft.utm;
        field(f, "_vid", vid); field(f, "_page", w.location.href); field(f, "_ref", ft.referrer || ref);
        for (var j = 0; j < K.length; j++) if (u[K[j]]) field(f, "utm_" + K[j], u[K[j]]);
      } catch (e) { /* never block a submit */ }
    }
    function tagAll() { for (var j = 0; j < d.forms.length; j++) { tag(d.forms[j]); stamp(d.forms[j]); } }
    if (d.addEventListener) {
      // Capture phase on document: covers forms added later, and runs before site handlers.
      d.addEventListener("submit", function (e) { if (e.target && e.target.tagName === "FORM") tag(e.target); }, true);
      if (d.readyState === "loading") d.addEventListener("DOMContentLoaded", tagAll); else tagAll();
    }
  } catch (e) { /* the host page must never see our errors */ }
})(window, document);
