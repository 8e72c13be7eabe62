// Trimo dashboard: live board cards, live run logs, the lazy diff, relative times.
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

function fragment(html) {
  const template = document.createElement("template");
  template.innerHTML = html.trim();
  return template.content.firstElementChild;
}

function recount() {
  document.querySelectorAll(".column").forEach((column) => {
    const count = column.querySelector(".count");
    if (count) count.textContent = column.querySelectorAll(".card").length;
  });
}

function followBoard(board) {
  const source = new EventSource(board.dataset.stream);
  let opened = false;
  source.addEventListener("open", () => {
    if (opened) window.location.reload(); // reconnected: what changed meanwhile is unknown
    opened = true;
  });
  source.addEventListener("card", (event) => {
    const data = JSON.parse(event.data);
    const card = fragment(data.html);
    const old = document.getElementById("card-" + data.id);
    if (old) old.remove();
    const column = document.querySelector("#col-" + data.column + " .cards");
    if (column && card) column.prepend(card);
    recount();
    tick();
  });
  source.addEventListener("remove", (event) => {
    const old = document.getElementById("card-" + JSON.parse(event.data).id);
    if (old) { old.remove(); recount(); }
  });
  source.addEventListener("reload", () => window.location.reload());
}

function followLog(log) {
  const source = new EventSource(log.dataset.stream);
  const status = document.getElementById("run-status");
  source.addEventListener("line", (event) => {
    const line = fragment(event.data);
    if (!line) return;
    if (status && (status.dataset.status === "waiting" || status.dataset.status === "queued")) {
      status.dataset.status = "running"; // its events flow: a runner has it
      document.getElementById("run-state").textContent = "running";
    }
    const stick = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    log.appendChild(line);
    if (stick) line.scrollIntoView({ block: "end" });
  });
  source.addEventListener("end", (event) => {
    source.close();
    if (status) {
      status.dataset.status = "finished";
      document.getElementById("run-state").textContent = JSON.parse(event.data).outcome;
    }
    const stop = document.getElementById("stop");
    if (stop) stop.remove();
  });
  source.addEventListener("reload", () => window.location.reload());
}

function loadDiff(diff) {
  fetch(diff.dataset.src, { credentials: "same-origin" })
    .then((response) => response.text())
    .then((html) => { diff.innerHTML = html; })
    .catch(() => { diff.textContent = "The diff could not be loaded; reload to try again."; });
}

document.addEventListener("DOMContentLoaded", () => {
  const board = document.getElementById("board");
  if (board) followBoard(board);
  const log = document.getElementById("log");
  if (log) followLog(log);
  const diff = document.getElementById("diff");
  if (diff && diff.dataset.src) loadDiff(diff);
  document.querySelectorAll("#filters select").forEach((select) => {
    select.addEventListener("change", () => select.form.submit());
  });
  tick();
  setInterval(tick, 1000);
});
