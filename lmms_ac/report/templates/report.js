/* lmms-ac report: sortable tables, view switches and row filters. No dependencies, no network. */
(function () {
  "use strict";

  function sortKey(cell, type) {
    if (!cell) return null;
    if (type === "num") {
      var v = cell.getAttribute("data-v");
      return v === null || v === "" ? null : parseFloat(v);
    }
    var t = cell.textContent.trim().toLowerCase();
    return t === "" ? null : t;
  }

  function sortTable(th) {
    var table = th.closest("table");
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var type = th.getAttribute("data-type") || "text";
    var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    table.querySelectorAll("thead th").forEach(function (h) { h.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", dir);
    var sign = dir === "ascending" ? 1 : -1;
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = sortKey(a.cells[index], type), y = sortKey(b.cells[index], type);
      if (x === null || y === null) return x === y ? 0 : (x === null ? 1 : -1); // missing values last
      if (type === "text") return sign * x.localeCompare(y, undefined, {numeric: true});
      return x < y ? -sign : (x > y ? sign : 0);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }

  function showView(select) {
    var group = select.getAttribute("data-views");
    document.querySelectorAll('.view-item[data-views="' + group + '"]').forEach(function (el) {
      el.hidden = el.getAttribute("data-view") !== select.value;
    });
  }

  function filterRows(input) {
    var q = input.value.trim().toLowerCase();
    var scope = document.getElementById(input.getAttribute("data-scope"));
    scope.querySelectorAll("[data-key]").forEach(function (el) {
      el.hidden = q !== "" && el.getAttribute("data-key").toLowerCase().indexOf(q) === -1;
    });
  }

  document.querySelectorAll("table.sortable thead th").forEach(function (th) {
    th.addEventListener("click", function () { sortTable(th); });
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortTable(th); }
    });
  });
  document.querySelectorAll("select.view-select").forEach(function (sel) {
    sel.addEventListener("change", function () { showView(sel); });
    showView(sel);
  });
  document.querySelectorAll("input.row-filter").forEach(function (input) {
    input.addEventListener("input", function () { filterRows(input); });
  });
})();
