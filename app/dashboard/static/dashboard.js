// Trimo dashboard: live board cards, live pages, live run logs, the lazy diff, the tab's
// state, relative times.
// No inline script (the Content-Security-Policy forbids it); HTML comes rendered and
// escaped by the server.
"use strict";

function ago(seconds) {
  if (seconds < 45) return "just now";
  if (seconds < 3600) return Math.max(1, Math.round(seconds / 60)) + "m ago";
  if (seconds < 86400) return Math.floor(seconds / 3600) + "h ago";
  return Math.floor(seconds / 86400) + "d ago";
}

function elapsed(seconds) {
  seconds = Math.floor(seconds);
  const pad = (n) => String(n).padStart(2, "0");
  if (seconds < 60) return seconds + "s";
  if (seconds < 3600) return Math.floor(seconds / 60) + "m " + pad(seconds % 60) + "s";
  return Math.floor(seconds / 3600) + "h " + pad(Math.floor((seconds % 3600) / 60)) + "m";
}

function tick() {
  const now = Date.now();
  document.querySelectorAll("time[data-ago], time[data-elapsed]").forEach((el) => {
    const at = Date.parse(el.getAttribute("datetime"));
    if (Number.isNaN(at)) return;
    const seconds = Math.max(0, (now - at) / 1000);
    el.textContent = el.hasAttribute("data-elapsed") ? elapsed(seconds) : ago(seconds);
  });
}

const streams = [];

function stream(url) {
  // An event stream, closed when the page goes: a browser keeps only a few connections
  // per host, and a stream left open by a page being left takes one.
  const source = new EventSource(url);
  streams.push(source);
  return source;
}

window.addEventListener("pagehide", () => streams.forEach((source) => source.close()));

function fragment(html) {
  const template = document.createElement("template");
  template.innerHTML = html.trim();
  return template.content.firstElementChild;
}

const NOTIFY_KEY = "trimo-notify";
const NOTIFY_COLUMNS = { needs_you: "needs you", review: "is ready for review" };

function notifying() {
  try {
    return window.localStorage.getItem(NOTIFY_KEY) === "1" && "Notification" in window &&
      Notification.permission === "granted";
  } catch (e) { return false; }
}

function notify(title, body, href, tag) {
  // A browser notification, when this person turned them on; a click opens `href`.
  if (!notifying()) return;
  const note = new Notification(title, { body: body, tag: tag });
  note.addEventListener("click", () => { window.focus(); window.location.assign(href); });
}

function setUpNotifications(button) {
  const show = () => {
    const on = notifying();
    button.textContent = on ? "Notifications on" : "Notify me";
    button.setAttribute("aria-pressed", String(on));
  };
  if (!("Notification" in window)) { button.hidden = true; return; }
  button.addEventListener("click", () => {
    if (notifying()) {
      window.localStorage.setItem(NOTIFY_KEY, "0");
      show();
      return;
    }
    Notification.requestPermission().then((answer) => {
      window.localStorage.setItem(NOTIFY_KEY, answer === "granted" ? "1" : "0");
      show();
    });
  });
  show();
}

function recount() {
  document.querySelectorAll(".column").forEach((column) => {
    const count = column.querySelector(".count");
    const cards = column.querySelectorAll(".card").length;
    if (count) count.textContent = cards;
    const empty = column.querySelector(".empty-column");
    if (empty) empty.hidden = cards > 0;
  });
}

function followBoard(board) {
  const source = stream(board.dataset.stream);
  let opened = false;
  source.addEventListener("open", () => {
    if (opened) window.location.reload(); // reconnected: what changed meanwhile is unknown
    opened = true;
  });
  source.addEventListener("card", (event) => {
    const data = JSON.parse(event.data);
    const card = fragment(data.html);
    const old = document.getElementById("card-" + data.id);
    const column = document.querySelector("#col-" + data.column + " .cards");
    if (card && NOTIFY_COLUMNS[data.column] && (!old || old.dataset.column !== data.column)) {
      const head = card.querySelector(".card-head");
      const title = card.querySelector(".title");
      notify((head ? head.textContent.trim() : "A pipeline") + " " + NOTIFY_COLUMNS[data.column],
             (title ? title.textContent.trim() : "") + " · " + card.dataset.state,
             "/pipelines/" + data.id, data.id + ":" + data.column);
    }
    if (old && card && old.parentElement === column) {
      old.replaceWith(card); // same column: it keeps its place
    } else {
      if (old) old.remove();
      if (column && card) column.prepend(card);
    }
    recount();
    tick();
  });
  source.addEventListener("remove", (event) => {
    const old = document.getElementById("card-" + JSON.parse(event.data).id);
    if (old) { old.remove(); recount(); }
  });
  source.addEventListener("reload", () => window.location.reload());
}

function logFilter() {
  // Hide the lines that do not hold what #log-search asks for; count what shows.
  const search = document.getElementById("log-search");
  const query = search ? search.value.trim().toLowerCase() : "";
  const lines = document.querySelectorAll("#log .log-line");
  let shown = 0;
  lines.forEach((line) => {
    const hit = !query || line.textContent.toLowerCase().includes(query);
    line.hidden = !hit;
    if (hit) shown += 1;
  });
  const count = document.getElementById("log-count");
  if (count) count.textContent = query ? shown + " of " + lines.length + " lines" : "";
}

function followLog(log) {
  const source = stream(log.dataset.stream);
  const search = document.getElementById("log-search");
  if (search) search.addEventListener("input", logFilter);
  const showState = (words) => {
    const state = document.getElementById("run-state");
    if (state) state.textContent = words;
  };
  source.addEventListener("line", (event) => {
    const line = fragment(event.data);
    if (!line) return;
    const status = document.getElementById("run-status");
    if (status && (status.dataset.status === "waiting" || status.dataset.status === "queued")) {
      status.dataset.status = "running"; // its events flow: a runner has it
      showState("running");
      showTab("running");
    }
    const stick = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    log.appendChild(line);
    if (search && search.value.trim()) {
      line.hidden = !line.textContent.toLowerCase().includes(search.value.trim().toLowerCase());
      logFilter();
    }
    if (window.location.hash === "#" + line.id) {
      line.classList.add("target"); // a link to this line: show it
      line.scrollIntoView({ block: "center" });
      log.dataset.held = "1";
    } else if (stick && !log.dataset.held) {
      line.scrollIntoView({ block: "end" });
    }
  });
  source.addEventListener("end", (event) => {
    source.close();
    const status = document.getElementById("run-status");
    if (status) {
      status.dataset.status = "finished";
      showState(JSON.parse(event.data).outcome);
    }
    const stop = document.getElementById("stop");
    if (stop) stop.remove();
    const clock = document.querySelector("#run-elapsed time[data-elapsed]");
    if (clock) clock.removeAttribute("data-elapsed"); // it ended: the clock stops
  });
  source.addEventListener("reload", () => window.location.reload());
}

const TAB_MARKS = { queued: "◌ ", running: "● ", attention: "⚠ ", ready: "✓ ", done: "" };
const TAB_COLOURS = { queued: "#9a6700", running: "#0969da", attention: "#cf222e",
                      ready: "#1f883d", done: "#6e7781" };

function showTab(state) {
  // The tab's title mark and favicon: what the page shows, seen from another tab.
  const meta = document.querySelector('meta[name="trimo-tab"]');
  if (meta) meta.content = state || "";
  const title = document.title.replace(/^[◌●⚠✓] /, "");
  document.title = (TAB_MARKS[state] || "") + title;
  const colour = TAB_COLOURS[state] || "#24292f";
  const svg = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">' +
    '<circle cx="8" cy="8" r="7" fill="' + colour + '"/></svg>';
  let icon = document.querySelector('link[rel="icon"]');
  if (!icon) {
    icon = document.createElement("link");
    icon.rel = "icon";
    document.head.appendChild(icon);
  }
  icon.href = "data:image/svg+xml," + encodeURIComponent(svg);
}

const drawnParts = new Map(); // part id → the server's HTML of it last drawn

function rememberParts() {
  document.querySelectorAll("[data-part][id]").forEach((part) => {
    drawnParts.set(part.id, part.outerHTML);
  });
}

function refreshParts() {
  // Fetch this page again and swap in the live parts that changed (never the one being
  // typed in): an unchanged part stays, and so do the elements a person is about to use.
  return fetch(window.location.pathname + window.location.search, { credentials: "same-origin" })
    .then((response) => {
      if (!response.ok) throw new Error(String(response.status));
      return response.text();
    })
    .then((html) => {
      const fresh = new DOMParser().parseFromString(html, "text/html");
      const preview = document.getElementById("preview");
      const next = fresh.getElementById("preview");
      if (preview && next && next.dataset.status === "ready" && preview.dataset.status !== "ready") {
        notify("Preview ready", document.title.replace(/^[◌●⚠✓] /, ""), window.location.pathname,
               "preview:" + window.location.pathname);
      }
      fresh.querySelectorAll("[data-part][id]").forEach((part) => {
        const old = document.getElementById(part.id);
        if (!old || old.contains(document.activeElement)) return;
        if (drawnParts.get(part.id) === part.outerHTML) return;
        drawnParts.set(part.id, part.outerHTML);
        old.replaceWith(document.importNode(part, true));
      });
      const title = fresh.querySelector("title");
      if (title) document.title = title.textContent;
      const tab = fresh.querySelector('meta[name="trimo-tab"]');
      showTab(tab ? tab.content : "");
      const main = fresh.querySelector("main[data-updated]");
      const here = document.querySelector("main[data-updated]");
      if (main && here) here.dataset.updated = main.dataset.updated;
      tick();
      document.dispatchEvent(new CustomEvent("trimo:refreshed"));
    });
}

function followPage(main) {
  const source = stream(main.dataset.live);
  let pending = null;
  let again = false;
  const refresh = () => {
    if (pending) { again = true; return; }
    pending = refreshParts()
      .catch(() => {})
      .finally(() => {
        pending = null;
        if (again) { again = false; refresh(); }
      });
  };
  source.addEventListener("hello", (event) => {
    const data = JSON.parse(event.data);
    const known = main.dataset.updated;
    // Drawn before the stream opened, or reconnected: catch up if it changed meanwhile.
    if (data.updated === undefined || !known || data.updated !== known) refresh();
  });
  source.addEventListener("changed", refresh);
  source.addEventListener("reload", () => window.location.reload());
}

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function showDiffView(diff, view) {
  diff.classList.toggle("split", view === "split");
  diff.querySelectorAll(".diff-views button").forEach((button) => {
    button.setAttribute("aria-pressed", String(button.dataset.view === view));
  });
  try { window.localStorage.setItem("trimo-diff-view", view); } catch (e) { /* private mode */ }
}

function foldFile(file, open) {
  const body = file.querySelector(".diff-body");
  const fold = file.querySelector(".fold");
  if (body) body.hidden = !open;
  if (fold) {
    fold.setAttribute("aria-expanded", String(open));
    fold.firstChild.textContent = open ? "▾" : "▸";
  }
}

function codeText(cell) {
  // The line's own text, without the comment button's "+".
  return Array.from(cell.childNodes).filter((n) => n.nodeType === Node.TEXT_NODE)
    .map((n) => n.textContent).join("");
}

function hunkUpTo(row) {
  // The diff hunk ending at `row`, as a review comment on GitHub carries it.
  const lines = [];
  for (let at = row; at; at = at.previousElementSibling) {
    const cell = at.querySelector(".code");
    if (at.classList.contains("hunk")) { lines.unshift(cell.textContent); break; }
    const mark = at.classList.contains("add") ? "+" : at.classList.contains("del") ? "-" : " ";
    lines.unshift(mark + codeText(cell));
  }
  return lines.join("\n");
}

function openLineComment(diff, button) {
  const row = button.closest("tr");
  const next = row.nextElementSibling;
  if (next && next.classList.contains("line-comment")) { next.querySelector("textarea").focus(); return; }
  const file = button.closest(".diff-file").dataset.file;
  const line = row.dataset.new || row.dataset.old;
  const form = document.createElement("form");
  form.method = "post";
  form.action = diff.dataset.src.replace(/\/diff$/, "/comment");
  const fields = { csrf: csrfToken(), path: file, line: line, diff_hunk: hunkUpTo(row) };
  Object.entries(fields).forEach(([name, value]) => {
    const input = document.createElement("input");
    input.type = "hidden"; input.name = name; input.value = value;
    form.appendChild(input);
  });
  const label = document.createElement("label");
  label.textContent = "Ask the agent about " + file + " line " + line;
  const text = document.createElement("textarea");
  text.name = "prompt"; text.rows = 3; text.required = true;
  label.appendChild(text);
  const send = document.createElement("button");
  send.textContent = "Start a follow-up";
  const cancel = document.createElement("button");
  cancel.type = "button"; cancel.className = "secondary"; cancel.textContent = "Cancel";
  form.append(label, send, cancel);
  const holder = document.createElement("tr");
  holder.className = "line-comment";
  const cell = document.createElement("td");
  cell.colSpan = 3;
  cell.appendChild(form);
  holder.appendChild(cell);
  row.after(holder);
  cancel.addEventListener("click", () => holder.remove());
  text.focus();
}

function markViewed(diff, box) {
  const file = box.closest(".diff-file");
  const body = new URLSearchParams({ csrf: csrfToken(), file: file.dataset.file,
                                     digest: file.dataset.digest, viewed: box.checked ? "1" : "0" });
  fetch(diff.dataset.src.replace(/\/diff$/, "/viewed"), { method: "POST", body: body,
                                                          credentials: "same-origin" })
    .then((response) => {
      if (!response.ok) throw new Error(String(response.status));
      file.toggleAttribute("data-viewed", box.checked);
      foldFile(file, !box.checked);
      const link = diff.querySelector('#diff-tree a[href="#' + file.id + '"]');
      if (link) link.classList.toggle("viewed", box.checked);
      const count = document.getElementById("viewed-count");
      if (count) count.textContent = diff.querySelectorAll(".diff-file[data-viewed]").length;
    })
    .catch(() => { box.checked = !box.checked; });
}

function wireDiff(diff) {
  let view = "unified";
  try { view = window.localStorage.getItem("trimo-diff-view") || view; } catch (e) { /* */ }
  showDiffView(diff, view);
  diff.addEventListener("click", (event) => {
    const target = event.target.closest("button");
    if (!target) return;
    if (target.dataset.view) showDiffView(diff, target.dataset.view);
    else if (target.classList.contains("fold")) {
      const file = target.closest(".diff-file");
      foldFile(file, file.querySelector(".diff-body").hidden);
    } else if (target.classList.contains("comment-line")) openLineComment(diff, target);
  });
  diff.addEventListener("change", (event) => {
    if (event.target.closest(".viewed-mark")) markViewed(diff, event.target);
  });
}

function loadDiff(diff) {
  fetch(diff.dataset.src, { credentials: "same-origin" })
    .then((response) => response.text())
    .then((html) => { diff.innerHTML = html; wireDiff(diff); })
    .catch(() => { diff.textContent = "The diff could not be loaded; reload to try again."; });
}

const attemptDiffs = new Map(); // a set's diffs' address (with what they show) → their HTML

function loadAttemptDiffs() {
  // Each set of attempts' diffs side by side: fetched again only when what they show
  // changed (their address says it), so a live redraw of the table keeps them.
  document.querySelectorAll(".attempt-diffs[data-src]").forEach((holder) => {
    const src = holder.dataset.src;
    if (holder.dataset.loaded === src) return;
    holder.dataset.loaded = src;
    const known = attemptDiffs.get(src);
    if (known !== undefined) { holder.innerHTML = known; return; }
    fetch(src, { credentials: "same-origin" })
      .then((response) => {
        if (!response.ok) throw new Error(String(response.status));
        return response.text();
      })
      .then((html) => { attemptDiffs.set(src, html); holder.innerHTML = html; })
      .catch(() => { holder.textContent = "The attempts' diffs could not be loaded; reload to try again."; });
  });
}

document.addEventListener("trimo:refreshed", loadAttemptDiffs);

function withToken(event) {
  // A card's form is drawn for every viewer: it carries this page's CSRF token when sent.
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || form.querySelector('input[name="csrf"]')) return;
  const token = document.querySelector('meta[name="csrf-token"]');
  if (!token) return;
  const input = document.createElement("input");
  input.type = "hidden";
  input.name = "csrf";
  input.value = token.content;
  form.appendChild(input);
}

document.addEventListener("submit", withToken, true);

function offerBranches(form) {
  // The New pipeline form: the chosen repository's branches, offered for the base branch.
  const repo = form.querySelector('select[name="repo"]');
  const list = document.getElementById("branches");
  if (!repo || !list) return;
  const load = () => {
    fetch("/branches?repo=" + encodeURIComponent(repo.value), { credentials: "same-origin" })
      .then((response) => (response.ok ? response.json() : { branches: [] }))
      .then((data) => {
        list.replaceChildren(...data.branches.map((name) => {
          const option = document.createElement("option");
          option.value = name;
          return option;
        }));
      })
      .catch(() => {});
  };
  repo.addEventListener("change", load);
  load();
}

function showHelp(open) {
  const help = document.getElementById("help");
  if (!help) return;
  help.hidden = !open;
  if (open) document.getElementById("help-close").focus();
}

function moveSelection(step) {
  // j/k: the next or previous card on the board, in reading order.
  const cards = Array.from(document.querySelectorAll("#board .card"));
  if (!cards.length) return;
  const at = cards.findIndex((card) => card.classList.contains("selected"));
  const next = cards[Math.min(cards.length - 1, Math.max(0, at < 0 ? 0 : at + step))];
  cards.forEach((card) => card.classList.toggle("selected", card === next));
  const link = next.querySelector("a.card-link");
  if (link) link.focus();
  next.scrollIntoView({ block: "nearest" });
}

function onKey(event) {
  if (event.key === "Escape") { showHelp(false); return; }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const typing = event.target.closest("input, textarea, select, [contenteditable]");
  if (typing) return;
  if (event.key === "?") { event.preventDefault(); showHelp(document.getElementById("help").hidden); }
  else if (event.key === "j") moveSelection(1);
  else if (event.key === "k") moveSelection(-1);
  else if (event.key === "/") {
    const field = document.getElementById("log-search") || document.querySelector("#filters select");
    if (field) { event.preventDefault(); field.focus(); }
  }
}

document.addEventListener("keydown", onKey);

document.addEventListener("DOMContentLoaded", () => {
  const board = document.getElementById("board");
  if (board) followBoard(board);
  const log = document.getElementById("log");
  if (log) followLog(log);
  const notifyButton = document.getElementById("notify");
  if (notifyButton) setUpNotifications(notifyButton);
  const newPipeline = document.getElementById("new-pipeline");
  if (newPipeline) offerBranches(newPipeline);
  const close = document.getElementById("help-close");
  if (close) close.addEventListener("click", () => showHelp(false));
  rememberParts(); // before the clocks tick
  const main = document.querySelector("main[data-live]");
  if (main) followPage(main);
  const tab = document.querySelector('meta[name="trimo-tab"]');
  if (tab && tab.content) showTab(tab.content);
  const diff = document.getElementById("diff");
  if (diff && diff.dataset.src) loadDiff(diff);
  loadAttemptDiffs();
  document.querySelectorAll("#filters select").forEach((select) => {
    select.addEventListener("change", () => select.form.submit());
  });
  tick();
  setInterval(tick, 1000);
});
