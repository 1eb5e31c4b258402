// The /ui page: lists your envs on the whole farm (GET /v2/envs) and polls each watchable env's frame
// (GET /v2/envs/<id>/frame). Both are reads that never count as a use, so watching keeps nothing alive.
// Plain browser JavaScript, no build step and no third-party code.
"use strict";

(function () {
  const KEY_STORE = "gymserve.apiKey"; // sessionStorage: typed once, forgotten when the browser session ends
  const LIST_EVERY_MS = 2000;
  const WATCHABLE = new Set(["rgb_array", "ansi"]);
  const API = new URL("../v2/", document.baseURI); // relative, so that a path prefix in front of /ui works

  const $ = (id) => document.getElementById(id);
  const cards = new Map(); // instance id -> {el, env, fetchedAt, busy, last}
  const params = new URLSearchParams(location.search);
  let fps = Number(params.get("fps") || $("fps").value);
  let frameTimer = null;

  function authHeaders() {
    const key = sessionStorage.getItem(KEY_STORE);
    return key ? { Authorization: "Bearer " + key } : {};
  }

  async function get(path) {
    const resp = await fetch(new URL(path, API), { headers: authHeaders(), cache: "no-store" });
    if (!resp.ok) {
      let message = resp.status + " " + resp.statusText;
      try {
        const body = await resp.json();
        message = (body.error && body.error.message) || message;
      } catch (_) { /* not JSON: keep the status line */ }
      const err = new Error(message);
      err.status = resp.status;
      throw err;
    }
    return resp;
  }

  function setStatus(text, bad) {
    $("status").textContent = text;
    $("status").classList.toggle("error", Boolean(bad));
  }

  function element(tag, attrs, text) {
    const el = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => el.setAttribute(k, v));
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function seconds(value) {
    if (value === null || value === undefined) return "never";
    if (value < 60) return value.toFixed(1) + " s";
    if (value < 3600) return (value / 60).toFixed(1) + " min";
    return (value / 3600).toFixed(1) + " h";
  }

  function number(value, digits) {
    return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
  }

  function labelsOf(env) {
    const labels = env.labels;
    if (!labels) return [];
    if (Array.isArray(labels)) return labels.map(String);
    if (typeof labels === "object") return Object.entries(labels).map(([k, v]) => k + "=" + v);
    return [String(labels)];
  }

  function newCard(env) {
    const el = element("article", { class: "env", "data-instance-id": env.instance_id, "data-frames": "0" });
    el.append(element("h2", { class: "env-id" }, env.env_id));
    el.append(element("div", { class: "id" }, env.instance_id));
    el.append(element("ul", { class: "labels" }));
    const view = element("div", { class: "view" });
    if (WATCHABLE.has(env.render_mode)) {
      view.append(env.render_mode === "ansi" ? element("pre", { class: "frame" }) : element("img", { class: "frame", alt: "frame of " + env.env_id }));
    } else {
      view.append(element("span", { class: "none" }, env.render_mode ? "render_mode " + env.render_mode + ": no frames" : "created without a render_mode: no frames"));
    }
    el.append(view);
    const stats = element("dl");
    for (const [name, title] of [["steps", "steps"], ["episodes", "episodes"], ["return", "last return"],
      ["length", "last length"], ["idle", "idle"], ["ttl", "TTL left"]]) {
      const box = element("div");
      box.append(element("dt", {}, title), element("dd", { class: name }));
      stats.append(box);
    }
    el.append(stats);
    return el;
  }

  function fill(card) {
    const env = card.env;
    const el = card.el;
    const ago = (Date.now() - card.fetchedAt) / 1000; // counted on between list polls
    const last = env.last_episode;
    el.querySelector("dd.steps").textContent = env.steps;
    el.querySelector("dd.episodes").textContent = env.episodes;
    el.querySelector("dd.return").textContent = last ? number(last.return, 2) : "–";
    el.querySelector("dd.length").textContent = last ? last.length : "–";
    el.querySelector("dd.idle").textContent = seconds(env.idle_seconds + ago);
    const left = env.ttl_left === null ? null : Math.max(0, env.ttl_left - ago);
    el.querySelector("dd.ttl").textContent = seconds(left);
    el.classList.toggle("expiring", left !== null && left < 10);
    el.dataset.steps = env.steps;
    const labels = el.querySelector(".labels");
    labels.replaceChildren(...labelsOf(env).map((text) => element("li", {}, text)));
    if (env.num_envs) el.querySelector("h2").textContent = env.env_id + " × " + env.num_envs + " (sub-env 0 shown)";
  }

  function showList(envs) {
    const seen = new Set();
    envs.sort((a, b) => a.created_at.localeCompare(b.created_at) || a.instance_id.localeCompare(b.instance_id));
    for (const env of envs) {
      seen.add(env.instance_id);
      let card = cards.get(env.instance_id);
      if (!card) {
        card = { el: newCard(env), busy: false, last: null };
        cards.set(env.instance_id, card);
      }
      card.env = env;
      card.fetchedAt = Date.now();
      fill(card);
      $("envs").append(card.el); // appending an existing node moves it: the order follows the list
    }
    for (const [id, card] of cards) {
      if (!seen.has(id)) { // closed or expired: it leaves the page
        if (card.url) URL.revokeObjectURL(card.url);
        card.el.remove();
        cards.delete(id);
      }
    }
    $("empty").hidden = cards.size > 0;
  }

  // Every page of the list: each answer holds at most GYMSERVE_LIST_MAX_PAGE envs and names the next page.
  async function listAll() {
    const envs = [];
    let cursor = null;
    do {
      const body = await (await get("envs" + (cursor ? "?cursor=" + encodeURIComponent(cursor) : ""))).json();
      envs.push(...body.envs);
      cursor = body.next_cursor;
    } while (cursor);
    return envs;
  }

  async function refreshList() {
    try {
      const envs = await listAll();
      showList(envs);
      setStatus(envs.length + " env" + (envs.length === 1 ? "" : "s") + ", updated " + new Date().toLocaleTimeString());
    } catch (err) {
      const keyNeeded = err.status === 401 || err.status === 403;
      setStatus((keyNeeded ? "this server needs an API key: " : "cannot list envs: ") + err.message, true);
    } finally {
      setTimeout(refreshList, LIST_EVERY_MS);
    }
  }

  // ansi frames colour what matters (FrozenLake: the agent's cell) with SGR escapes: shown as highlights,
  // built as text nodes, never as HTML.
  function ansiToNodes(text) {
    const nodes = [];
    let highlighted = false;
    for (const part of text.split(/(\x1b\[[0-9;]*m)/)) {
      const sgr = /^\x1b\[([0-9;]*)m$/.exec(part);
      if (sgr) {
        highlighted = !["", "0"].includes(sgr[1]);
      } else if (part) {
        nodes.push(highlighted ? element("mark", {}, part) : document.createTextNode(part));
      }
    }
    return nodes;
  }

  function same(a, b) {
    if (!a || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }

  async function refreshFrame(id, card) {
    if (card.busy || !WATCHABLE.has(card.env.render_mode)) return;
    card.busy = true; // one request per env at a time: a slow env never piles up requests
    try {
      const resp = await get("envs/" + encodeURIComponent(id) + "/frame");
      const bytes = new Uint8Array(await resp.arrayBuffer());
      if (same(card.last, bytes)) return;
      card.last = bytes;
      card.el.dataset.frames = String(Number(card.el.dataset.frames) + 1); // distinct frames shown
      const target = card.el.querySelector(".frame");
      if (card.env.render_mode === "ansi") {
        target.replaceChildren(...ansiToNodes(new TextDecoder().decode(bytes)));
      } else {
        const url = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
        target.src = url;
        if (card.url) URL.revokeObjectURL(card.url);
        card.url = url;
      }
      card.el.dataset.frameError = "";
    } catch (err) {
      card.el.dataset.frameError = err.message; // e.g. 409 before the first reset: shown as no frame yet
    } finally {
      card.busy = false;
    }
  }

  function restartFrames() {
    clearInterval(frameTimer);
    frameTimer = null;
    if (fps > 0) {
      frameTimer = setInterval(() => cards.forEach((card, id) => refreshFrame(id, card)), 1000 / fps);
    }
  }

  $("fps").value = String(fps);
  $("fps").addEventListener("change", () => { fps = Number($("fps").value); restartFrames(); });
  $("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (key) sessionStorage.setItem(KEY_STORE, key);
    $("api-key").value = "";
    $("api-key").placeholder = key ? "a key is in use for this session" : $("api-key").placeholder;
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    $("api-key").placeholder = "only if the server asks for one";
  });
  if (sessionStorage.getItem(KEY_STORE)) $("api-key").placeholder = "a key is in use for this session";
  setInterval(() => cards.forEach(fill), 1000);
  refreshList();
  restartFrames();
})();
