/*
 * Web chat widget. Embed with one tag:
 *   <script src="https://GATEWAY/widget.js" data-token="WIDGET_TOKEN" async></script>
 * Optional attributes: data-identity (a signed visitor identity from your backend, see docs/WEBCHAT.md),
 * data-mode="page" + data-target="#css-selector" (render inline instead of a floating launcher),
 * data-api-base (default: the origin widget.js was loaded from).
 * Plain DOM, no build step. Text is only ever set with textContent.
 */
(function () {
  "use strict";

  var script = document.currentScript ||
    document.querySelector('script[data-token][src*="widget.js"]');
  if (!script) { return; }
  var token = script.getAttribute("data-token");
  if (!token) { return; }
  var apiBase = (script.getAttribute("data-api-base") || new URL(script.src, location.href).origin)
    .replace(/\/$/, "");
  var mode = script.getAttribute("data-mode") === "page" ? "page" : "bubble";
  var identity = script.getAttribute("data-identity") || null;
  var api = apiBase + "/v1/webchat/" + encodeURIComponent(token);
  var REPLY_TIMEOUT_MS = 60000;
  var uid = "ema-wc-" + Math.random().toString(36).slice(2, 8);

  function randomId() {
    if (window.crypto && crypto.randomUUID) { return crypto.randomUUID(); }
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function visitorId() {
    if (identity) { return null; }
    var key = "ema-webchat:" + token + ":visitor";
    var id = null;
    try { id = localStorage.getItem(key); } catch (e) { id = null; }
    if (!id || !/^[A-Za-z0-9_-]{16,64}$/.test(id)) {
      id = randomId();
      try { localStorage.setItem(key, id); } catch (e) { /* private mode: one id per page view */ }
    }
    return id;
  }

  var visitor = visitorId();

  function who() {
    var q = new URLSearchParams();
    if (identity) { q.set("identity", identity); } else { q.set("visitor_id", visitor); }
    return q;
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text) { node.textContent = text; }
    return node;
  }

  function css(cfg) {
    var p = cfg.primary_color, t = cfg.primary_text_color, r = "#" + uid;
    return [
      r + "{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;font-size:15px;color:#1d2330;box-sizing:border-box}",
      r + " *{box-sizing:inherit}",
      r + ".bubble{position:fixed;bottom:20px;" + cfg.position + ":20px;z-index:2147483000}",
      r + " .launcher{background:" + p + ";color:" + t + ";border:0;border-radius:24px;padding:12px 18px;font:inherit;font-weight:600;cursor:pointer;box-shadow:0 2px 8px #0003}",
      r + ".bubble .panel{position:absolute;bottom:60px;" + cfg.position + ":0;width:min(380px,calc(100vw - 40px))}",
      r + " .panel{display:flex;flex-direction:column;background:#fff;border-radius:10px;box-shadow:0 4px 18px #0002;overflow:hidden;height:min(560px,calc(100vh - 120px))}",
      r + ".page .panel{height:calc(100vh - 4rem);max-width:720px;margin:2rem auto}",
      r + " .panel[hidden]{display:none}",
      r + " header{background:" + p + ";color:" + t + ";padding:14px 16px;font-weight:600;display:flex;justify-content:space-between;align-items:center}",
      r + " header button{background:transparent;border:0;color:inherit;font-size:20px;cursor:pointer}",
      r + " .log{list-style:none;margin:0;padding:12px;flex:1;overflow-y:auto;background:#f6f7f9}",
      r + " .log li{margin:8px 0;padding:9px 12px;border-radius:12px;max-width:85%;white-space:pre-wrap;line-height:1.4}",
      r + " .log .visitor{background:" + p + ";color:" + t + ";margin-left:auto}",
      r + " .log .assistant{background:#fff;border:1px solid #e3e6eb}",
      r + " .log .notice{background:transparent;color:#5b6472;font-size:13px;text-align:center;max-width:100%}",
      r + " .sources{margin:6px 0 0;padding:6px 0 0;border-top:1px solid #eceef2;font-size:12px;color:#4b5563;list-style:none}",
      r + " .sources li{margin:2px 0;padding:0;border:0;background:none}",
      r + " .sources a{color:inherit;text-decoration:underline}",
      r + " .log .draft{opacity:.7}",
      r + " .buttons{display:flex;flex-wrap:wrap;gap:6px;margin-top:8px;white-space:normal}",
      r + " .buttons button{background:#fff;color:" + p + ";border:1px solid " + p + ";border-radius:16px;padding:4px 14px;font:inherit;cursor:pointer}",
      r + " .typing span{display:inline-block;width:6px;height:6px;margin:0 2px;border-radius:50%;background:#8a93a3;animation:" + uid + "-b 1s infinite}",
      r + " .typing span:nth-child(2){animation-delay:.15s}" + r + " .typing span:nth-child(3){animation-delay:.3s}",
      "@keyframes " + uid + "-b{0%,80%,100%{opacity:.3}40%{opacity:1}}",
      r + " form{display:flex;gap:8px;padding:10px;border-top:1px solid #e3e6eb;background:#fff}",
      r + " input{flex:1;padding:10px;border:1px solid #c5cad3;border-radius:8px;font:inherit}",
      r + " input:focus,"+ r + " button:focus-visible{outline:3px solid " + p + "55;outline-offset:1px}",
      r + " form button{background:" + p + ";color:" + t + ";border:0;border-radius:8px;padding:0 16px;font:inherit;font-weight:600;cursor:pointer}",
      r + " .sr-only{position:absolute;width:1px;height:1px;margin:-1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap;border:0}"
    ].join("\n");
  }

  function Chat(cfg, root) {
    this.cfg = cfg;
    this.root = root;
    this.rendered = {};
    this.draftRow = null;
    this.lastId = null;
    this.source = null;
    this.waiting = 0;
    this.timer = null;
    this.build();
  }

  Chat.prototype.build = function () {
    var cfg = this.cfg, self = this;
    var style = el("style");
    style.textContent = css(cfg);
    this.root.appendChild(style);
    this.root.id = uid;
    this.root.className = mode;
    var panel = el("section", { "class": "panel", "aria-label": cfg.title + " chat", "role": "region" });
    var header = el("header");
    header.appendChild(el("h2", { "style": "margin:0;font-size:16px", "id": uid + "-title" }, cfg.title));
    panel.appendChild(header);
    this.log = el("ol", {
      "class": "log", "role": "log", "aria-live": "polite", "aria-relevant": "additions",
      "aria-labelledby": uid + "-title", "tabindex": "0"
    });
    panel.appendChild(this.log);
    this.status = el("p", { "class": "sr-only", "role": "status", "aria-live": "polite" });
    panel.appendChild(this.status);
    var form = el("form", { "novalidate": "" });
    var label = el("label", { "for": uid + "-input", "class": "sr-only" }, "Message " + cfg.brand_name);
    this.input = el("input", {
      "id": uid + "-input", "name": "text", "type": "text", "autocomplete": "off",
      "placeholder": cfg.placeholder, "maxlength": "4000", "enterkeyhint": "send"
    });
    var send = el("button", { "type": "submit" }, "Send");
    form.appendChild(label);
    form.appendChild(this.input);
    form.appendChild(send);
    panel.appendChild(form);
    form.addEventListener("submit", function (ev) { ev.preventDefault(); self.submit(); });

    if (mode === "bubble") {
      var launcher = el("button", {
        "class": "launcher", "type": "button", "aria-expanded": "false", "aria-controls": uid + "-panel"
      }, cfg.launcher_label);
      var close = el("button", { "type": "button", "aria-label": "Close chat" }, "\u00d7");
      header.appendChild(close);
      panel.id = uid + "-panel";
      panel.hidden = true;
      var toggle = function (open) {
        panel.hidden = !open;
        launcher.setAttribute("aria-expanded", String(open));
        if (open) { self.input.focus(); self.start(); } else { launcher.focus(); }
      };
      launcher.addEventListener("click", function () { toggle(panel.hidden); });
      close.addEventListener("click", function () { toggle(false); });
      panel.addEventListener("keydown", function (ev) { if (ev.key === "Escape") { toggle(false); } });
      this.root.appendChild(panel);
      this.root.appendChild(launcher);
    } else {
      this.root.appendChild(panel);
      this.start();
      this.input.focus();
    }
  };

  Chat.prototype.start = function () {
    if (this.started) { return; }
    this.started = true;
    // The brand's suggested questions under the greeting: the first message clears them.
    this.add({ role: "assistant", text: this.cfg.greeting, citations: [], buttons: this.cfg.suggestions || [] }, "greeting");
    this.loadHistory();
  };

  Chat.prototype.add = function (msg, cls) {
    if (msg.id && this.rendered[msg.id]) { return; }
    if (msg.id) { this.rendered[msg.id] = true; this.lastId = msg.id; }
    if (cls !== "greeting") { this.clearButtons(); }  // only the newest message offers buttons
    var li = el("li", { "class": msg.role + (cls ? " " + cls : "") });
    if (msg.role === "assistant") { li.appendChild(el("span", { "class": "sr-only" }, this.cfg.brand_name + ": ")); }
    li.appendChild(document.createTextNode(msg.text));
    var seen = {};
    var cites = (msg.citations || []).filter(function (c) {
      var k = c.source + "\u0000" + c.heading_path;
      if (seen[k]) { return false; }
      seen[k] = true;
      return true;
    });
    if (cites.length) {
      var list = el("ul", { "class": "sources", "aria-label": "Sources" });
      cites.forEach(function (c) {
        var heading = (c.heading_path || "").split(" > ").join(" \u203a ");
        var label = c.source + (heading ? " \u203a " + heading : "");
        var item = el("li", { "class": "source" });
        if (/^https?:\/\//i.test(c.source)) {
          // A public page: a link that opens it (never the page's script: only http(s) URLs get one).
          item.appendChild(el("a", { href: c.source, target: "_blank", rel: "noopener noreferrer" }, label));
        } else {
          item.textContent = label;
        }
        list.appendChild(item);
      });
      li.appendChild(list);
    }
    if (msg.attachment) {
      // A file a person sent: a download link (the server checks it is this visitor's conversation).
      var file = el("a", { "class": "attachment", href: api + "/media/" + msg.attachment.id + "?" + who().toString(), download: msg.attachment.filename }, "\ud83d\udcce " + msg.attachment.filename);
      li.appendChild(el("br"));
      li.appendChild(file);
    }
    if (msg.role === "assistant" && msg.buttons && msg.buttons.length) {
      // A confirmation ("Shall I open a ticket?"): a tap sends the button's text as the visitor's answer.
      var self = this;
      var group = el("div", { "class": "buttons", "role": "group", "aria-label": "Quick replies" });
      msg.buttons.forEach(function (label) {
        var b = el("button", { "type": "button" }, label);
        b.addEventListener("click", function () { self.input.value = label; self.submit(); });
        group.appendChild(b);
      });
      li.appendChild(group);
    }
    this.log.insertBefore(li, this.typingRow || null);
    this.log.scrollTop = this.log.scrollHeight;
    return li;
  };

  Chat.prototype.clearButtons = function () {
    var groups = this.log.querySelectorAll(".buttons");
    for (var i = 0; i < groups.length; i++) { groups[i].parentNode.removeChild(groups[i]); }
  };

  Chat.prototype.notice = function (text) {
    this.add({ role: "notice", text: text, citations: [] });
  };

  Chat.prototype.setTyping = function (on) {
    var self = this;
    if (on) {
      if (!this.typingRow) {
        this.typingRow = el("li", { "class": "assistant typing", "aria-hidden": "true" });
        for (var i = 0; i < 3; i++) { this.typingRow.appendChild(el("span")); }
        this.log.appendChild(this.typingRow);
        this.log.setAttribute("aria-busy", "true");
        this.status.textContent = this.cfg.brand_name + " is typing\u2026";
      }
      clearTimeout(this.timer);  // again on every server "typing": the answer is still coming
      this.timer = setTimeout(function () {
        self.setTyping(false);
        self.notice("No reply yet. It will appear here as soon as it is ready.");
      }, REPLY_TIMEOUT_MS);
    } else if (!on && this.typingRow) {
      this.log.removeChild(this.typingRow);
      this.typingRow = null;
      this.log.removeAttribute("aria-busy");
      this.status.textContent = "";
      clearTimeout(this.timer);
    }
    this.log.scrollTop = this.log.scrollHeight;
  };

  Chat.prototype.loadHistory = function () {
    var self = this;
    fetch(api + "/history?" + who().toString(), { headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r); })
      .then(function (h) {
        h.messages.forEach(function (m) { self.add(m); });
        var last = h.messages[h.messages.length - 1];
        if (last && last.role === "visitor") { self.setTyping(true); }
        if (h.conversation_id) { self.listen(); }
      })
      .catch(function () { self.notice("Could not load earlier messages."); });
  };

  Chat.prototype.listen = function () {
    if (this.source) { return; }
    var self = this;
    var q = who();
    if (this.lastId) { q.set("after", this.lastId); }
    this.source = new EventSource(api + "/events?" + q.toString());
    this.source.addEventListener("message", function (ev) {
      var msg = JSON.parse(ev.data);
      var draft = msg.role === "assistant" ? self.endDraft() : "";
      if (msg.role === "assistant") { self.setTyping(false); }
      self.add(msg);
      if (draft && msg.text.replace(/\s+/g, " ").indexOf(draft.replace(/\s+/g, " ")) !== 0) {
        // The checked reply differs from what was being written: say so, rather than swap silently.
        self.notice("The reply was revised after checking it.");
      }
    });
    this.source.addEventListener("typing", function () {
      // The reply is still being written (renewed every few seconds): show it, and keep waiting.
      var rows = self.log.querySelectorAll("li.visitor, li.assistant:not(.typing):not(.draft)");
      var newest = rows.length ? rows[rows.length - 1] : null;
      if (newest && newest.classList.contains("visitor")) { self.setTyping(true); }
    });
    this.source.addEventListener("draft", function (ev) {
      var d = JSON.parse(ev.data);
      if (d && d.text) { self.showDraft(d.text); }
    });
  };

  // The reply while a streaming model writes it: provisional, hidden from screen readers (the stored
  // reply is announced once), replaced by the checked reply when it arrives.
  Chat.prototype.showDraft = function (text) {
    if (!this.draftRow) {
      this.draftRow = el("li", { "class": "assistant draft", "aria-hidden": "true" });
      this.log.insertBefore(this.draftRow, this.typingRow || null);
    }
    this.draftRow.textContent = text;
    this.log.scrollTop = this.log.scrollHeight;
  };

  Chat.prototype.endDraft = function () {
    if (!this.draftRow) { return ""; }
    var text = this.draftRow.textContent;
    this.log.removeChild(this.draftRow);
    this.draftRow = null;
    return text;
  };

  Chat.prototype.submit = function () {
    var text = this.input.value.trim();
    if (!text) { this.input.focus(); return; }
    var body = { text: text, client_message_id: randomId() };
    if (identity) { body.identity = identity; } else { body.visitor_id = visitor; }
    this.input.value = "";
    var row = this.add({ role: "visitor", text: text, citations: [] });
    this.setTyping(true);
    this.post(body, row, 0);
    this.input.focus();
  };

  Chat.prototype.post = function (body, row, attempt) {
    var self = this;
    fetch(api + "/messages", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body)
    }).then(function (r) {
      if (r.status === 202) {
        return r.json().then(function (a) {
          self.rendered[a.message_id] = true;
          if (!self.source) { self.lastId = a.message_id; self.listen(); }
        });
      }
      self.setTyping(false);
      if (r.status === 429) {
        var wait = r.headers.get("Retry-After") || "a few";
        self.notice("You are sending messages too quickly. Please wait " + wait + " seconds.");
        return null;
      }
      return r.json().then(function (e) {
        self.notice("Message not sent: " + ((e && e.error && e.error.message) || r.status));
      }, function () { self.notice("Message not sent (" + r.status + ")."); });
    }).catch(function () {
      if (attempt < 2) {  // same client_message_id: a retry can never answer twice
        setTimeout(function () { self.post(body, row, attempt + 1); }, 1000 * (attempt + 1));
        return;
      }
      self.setTyping(false);
      self.notice("Network problem: message not sent.");
    });
  };

  function mount() {
    fetch(api + "/config").then(function (r) {
      return r.ok ? r.json() : Promise.reject(new Error("widget config " + r.status));
    }).then(function (cfg) {
      var target = mode === "page" && script.getAttribute("data-target") ?
        document.querySelector(script.getAttribute("data-target")) : null;
      var root = el("div");
      (target || document.body).appendChild(root);
      window.EMAWebchat = new Chat(cfg, root);
    }).catch(function (err) {
      if (window.console) { console.error("web chat unavailable:", err); }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", mount);
  } else {
    mount();
  }
})();
