// evalkeeper dashboard: progressive enhancement only (every page works without it).
// Text from the server is inserted with textContent, never innerHTML, so model outputs stay text.
"use strict";

(function () {
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) node.setAttribute(k, String(v));
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function fmt(x, digits) {
    if (x === null || x === undefined) return "–";
    if (typeof x === "number") {
      if (x !== 0 && Math.abs(x) < Math.pow(10, -(digits || 3))) return x.toExponential(2);
      return x.toFixed(digits || 3);
    }
    return String(x);
  }

  // ---- sortable tables: click a header to sort by that column (data-sort wins over the text) ----
  function cellKey(row, i) {
    const cell = row.children[i];
    if (!cell) return "";
    const raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    const num = Number(raw.replace(/,/g, "").replace(/^\+/, ""));
    return raw !== "" && !Number.isNaN(num) ? num : raw.toLowerCase();
  }

  function makeSortable(table) {
    const heads = table.tHead ? Array.from(table.tHead.rows[0].cells) : [];
    heads.forEach(function (th, i) {
      th.addEventListener("click", function () {
        const asc = !th.classList.contains("sorted-asc");
        heads.forEach(function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
        th.classList.add(asc ? "sorted-asc" : "sorted-desc");
        const body = table.tBodies[0];
        const rows = Array.from(body.rows);
        rows.sort(function (a, b) {
          const x = cellKey(a, i), y = cellKey(b, i);
          const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }

  // ---- sample explorer: fetch pages from the JSON API instead of reloading ----
  function sampleHref(run, r) {
    const q = new URLSearchParams({ task: r.task, sample_id: r.sample_id, epoch: String(r.epoch) });
    return "/runs/" + encodeURIComponent(run) + "/sample?" + q.toString();
  }

  function textCell(value) {
    const v = value === null || value === undefined ? "–" : value;
    return el("td", { class: "text-cell", title: value || "" }, v);
  }

  function renderRows(body, run, page) {
    body.replaceChildren();
    if (!page.rows.length) {
      const tr = el("tr", { class: "empty-row" });
      tr.appendChild(el("td", { colspan: "8" }, "No sample matches these filters."));
      body.appendChild(tr);
      return;
    }
    for (const r of page.rows) {
      const tr = el("tr");
      tr.appendChild(el("td", {}, r.task));
      const idCell = el("td");
      idCell.appendChild(el("a", { class: "mono", href: sampleHref(run, r), title: r.sample_id }, r.sample_id));
      tr.appendChild(idCell);
      tr.appendChild(el("td", { class: "num" }, r.epoch));
      const cls = r.score === null ? "" : r.score >= 1 ? "ok" : r.score <= 0 ? "bad" : "";
      tr.appendChild(el("td", { class: "num score " + cls }, fmt(r.score)));
      tr.appendChild(textCell(r.input));
      tr.appendChild(textCell(r.prediction));
      tr.appendChild(textCell(r.target));
      const groups = el("td");
      for (const [k, v] of Object.entries(r.group || {})) {
        groups.appendChild(el("span", { class: "tag", title: k + "=" + v }, k + "=" + v));
      }
      tr.appendChild(groups);
      body.appendChild(tr);
    }
  }

  function renderPager(pager, page, go) {
    pager.replaceChildren();
    const prev = page.page > 1
      ? el("a", { id: "prev-page", href: "#", "data-page": page.page - 1 }, "‹ Previous")
      : el("span", { id: "prev-page", class: "disabled" }, "‹ Previous");
    const next = page.page < page.pages
      ? el("a", { id: "next-page", href: "#", "data-page": page.page + 1 }, "Next ›")
      : el("span", { id: "next-page", class: "disabled" }, "Next ›");
    pager.append(prev, el("span", {}, "page " + page.page + " of " + page.pages), next);
    for (const a of pager.querySelectorAll("a[data-page]")) {
      a.addEventListener("click", function (ev) { ev.preventDefault(); go(Number(a.getAttribute("data-page"))); });
    }
  }

  function formParams(form, pageNo) {
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form).entries()) {
      if (v !== "") params.set(k, String(v));
    }
    if (pageNo && pageNo > 1) params.set("page", String(pageNo));
    return params;
  }

  function setupExplorer(form) {
    const api = form.getAttribute("data-api");
    const run = form.getAttribute("data-run");
    const body = document.getElementById("samples-body");
    const pager = document.getElementById("pager");
    const status = document.getElementById("explorer-status");
    let seq = 0;

    async function load(params, push) {
      const mine = ++seq;
      status.classList.add("loading");
      try {
        const resp = await fetch(api + "?" + params.toString(), { headers: { Accept: "application/json" } });
        const data = await resp.json();
        if (mine !== seq) return;
        if (!resp.ok) {
          const msg = typeof data.detail === "string" ? data.detail : "invalid filter";
          status.replaceChildren(el("span", { class: "error-text" }, "Error: " + msg));
          return;
        }
        renderRows(body, run, data);
        const total = el("b", { id: "total" }, data.total.toLocaleString("en-US"));
        status.replaceChildren(total, document.createTextNode(" matching samples · page "),
          el("span", { id: "page-no" }, data.page), document.createTextNode(" of "),
          el("span", { id: "page-count" }, data.pages));
        renderPager(pager, data, function (n) { load(formParams(form, n), true); });
        if (push) history.pushState(null, "", location.pathname + "?" + params.toString());
      } catch (err) {
        status.replaceChildren(el("span", { class: "error-text" }, "Could not load samples: " + err));
      } finally {
        status.classList.remove("loading");
      }
    }

    form.addEventListener("submit", function (ev) { ev.preventDefault(); load(formParams(form, 1), true); });
    for (const a of pager.querySelectorAll("a[data-page]")) {
      a.addEventListener("click", function (ev) {
        ev.preventDefault();
        load(formParams(form, Number(a.getAttribute("data-page"))), true);
      });
    }
    window.addEventListener("popstate", function () { location.reload(); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("table.sortable").forEach(makeSortable);
    const form = document.getElementById("explorer-form");
    if (form) setupExplorer(form);
  });
})();
