// Sorting, filtering and download for the static leaderboard (benchmark/site). No libraries and
// no network: the rows are in the page, the data for downloads is the inline JSON block.
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("leaderboard-data").textContent);
  var byId = {};
  data.rows.forEach(function (r) { byId[r.id] = r.values; });
  var filters = Array.prototype.slice.call(document.querySelectorAll("select[data-filter]"));
  var search = document.getElementById("search");
  var fullAA = document.getElementById("full-aa");
  var count = document.getElementById("count");
  var tables = Array.prototype.slice.call(document.querySelectorAll("table.lb"));
  var total = data.rows.length;

  // ---------------------------------------------------------------- sorting
  // Numbers compare as numbers (9.5 before 10.2); a missing value ("—") sorts last in either
  // direction; ties keep the order the generator wrote.
  function sortValue(td, type) {
    var raw = td.getAttribute("data-v");
    if (raw === null || raw === "") { return null; }
    if (type === "num") {
      var x = parseFloat(raw);
      return isNaN(x) ? null : x;
    }
    return raw.toLowerCase();
  }

  function sortTable(table, col, type, dir) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.forEach(function (tr, i) { if (!tr.hasAttribute("data-order")) { tr.setAttribute("data-order", String(i)); } });
    rows.sort(function (a, b) {
      var va = sortValue(a.cells[col], type), vb = sortValue(b.cells[col], type);
      if (va === null && vb === null) { return a.getAttribute("data-order") - b.getAttribute("data-order"); }
      if (va === null) { return 1; }
      if (vb === null) { return -1; }
      var c = 0;
      if (type === "num") { c = va - vb; } else { c = va < vb ? -1 : (va > vb ? 1 : 0); }
      if (c === 0) { return a.getAttribute("data-order") - b.getAttribute("data-order"); }
      return dir === "ascending" ? c : -c;
    });
    rows.forEach(function (tr) { body.appendChild(tr); });
  }

  tables.forEach(function (table) {
    var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
    heads.forEach(function (th, col) {
      th.tabIndex = 0;
      function activate() {
        var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
        heads.forEach(function (h) { h.setAttribute("aria-sort", "none"); });
        th.setAttribute("aria-sort", dir);
        sortTable(table, col, th.getAttribute("data-type") || "text", dir);
      }
      th.addEventListener("click", activate);
      th.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); activate(); }
      });
    });
  });

  // ---------------------------------------------------------------- filtering
  function matches(tr) {
    for (var i = 0; i < filters.length; i++) {
      var want = filters[i].value;
      if (want !== "" && tr.getAttribute("data-" + filters[i].getAttribute("data-filter")) !== want) { return false; }
    }
    if (fullAA.checked && tr.getAttribute("data-fullaa") !== "1") { return false; }
    var words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    var text = tr.getAttribute("data-text");
    return words.every(function (w) { return text.indexOf(w) !== -1; });
  }

  // The plots of a table follow its rows: a point whose row is filtered out is hidden, and so is
  // a line through any hidden point (the points it joins are no longer all on the page).
  function followRows(section, table) {
    var shownIds = {};
    Array.prototype.forEach.call(table.tBodies[0].rows, function (tr) {
      if (!tr.hidden) { shownIds[tr.getAttribute("data-id")] = true; }
    });
    Array.prototype.forEach.call(section.querySelectorAll("svg [data-row]"), function (el) {
      el.style.display = shownIds[el.getAttribute("data-row")] ? "" : "none";
    });
    Array.prototype.forEach.call(section.querySelectorAll("svg [data-rows]"), function (el) {
      var all = el.getAttribute("data-rows").split(" ").every(function (id) { return shownIds[id]; });
      el.style.display = all ? "" : "none";
    });
  }

  function applyFilters() {
    var shown = 0;
    tables.forEach(function (table) {
      var visible = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (tr) {
        var ok = matches(tr);
        tr.hidden = !ok;
        if (ok) { visible += 1; }
      });
      shown += visible;
      var section = table.closest("section");
      section.querySelector(".empty").hidden = visible > 0;
      table.hidden = visible === 0;
      followRows(section, table);
    });
    count.textContent = shown + " of " + total + " rows";
  }

  filters.forEach(function (s) { s.addEventListener("change", applyFilters); });
  search.addEventListener("input", applyFilters);
  fullAA.addEventListener("change", applyFilters);

  // ---------------------------------------------------------------- download
  function visibleIds() {
    var ids = [];
    tables.forEach(function (table) {
      Array.prototype.forEach.call(table.tBodies[0].rows, function (tr) {
        if (!tr.hidden) { ids.push(tr.getAttribute("data-id")); }
      });
    });
    return ids;
  }

  function csvField(v) {
    if (v === null || v === undefined) { return ""; }
    if (typeof v === "boolean") { return v ? "True" : "False"; }  // as pandas writes leaderboard.csv
    var s = String(v);
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function save(text, name, type) {
    var url = URL.createObjectURL(new Blob([text], { type: type }));
    var a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    document.body.removeChild(a);
    setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
  }

  document.getElementById("download-csv").addEventListener("click", function () {
    var lines = [data.columns.map(csvField).join(",")];
    visibleIds().forEach(function (id) {
      var values = byId[id];
      lines.push(data.columns.map(function (c) { return csvField(values[c]); }).join(","));
    });
    save(lines.join("\n") + "\n", "leaderboard.csv", "text/csv");
  });

  document.getElementById("download-json").addEventListener("click", function () {
    var rows = visibleIds().map(function (id) { return byId[id]; });
    save(JSON.stringify(rows, null, 2) + "\n", "leaderboard.json", "application/json");
  });

  applyFilters();
}());
