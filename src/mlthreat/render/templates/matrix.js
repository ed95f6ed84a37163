// The matrix page's filter and keyboard shortcuts. Reads cell data from data- attributes and
// writes only textContent and the hidden property, so no data is ever parsed as HTML.
(function () {
  "use strict";
  var box = document.querySelector(".filter");
  var input = document.getElementById("filter-input");
  var status = document.getElementById("filter-status");
  if (!box || !input || !status) {
    return;
  }
  var headers = document.querySelectorAll(".matrix thead th");
  var columns = Array.prototype.map.call(document.querySelectorAll(".matrix tbody td"),
    function (td, i) {
      var cells = Array.prototype.map.call(td.querySelectorAll(".cell[data-id]"), function (cell) {
        return { el: cell, id: cell.dataset.id.toLowerCase(), name: cell.dataset.name.toLowerCase() };
      });
      return { td: td, th: headers[i], cells: cells };
    });
  var total = columns.reduce(function (n, col) { return n + col.cells.length; }, 0);

  // Hide the cells whose ID and name both miss the query, and the columns left empty.
  function apply() {
    var query = input.value.trim().toLowerCase();
    var shown = 0;
    columns.forEach(function (col) {
      var inColumn = 0;
      col.cells.forEach(function (cell) {
        var match = query === "" || cell.id.indexOf(query) !== -1 || cell.name.indexOf(query) !== -1;
        cell.el.hidden = !match;
        inColumn += match ? 1 : 0;
      });
      col.td.hidden = col.th.hidden = inColumn === 0 && query !== "";
      shown += inColumn;
    });
    status.textContent = query === "" ? total + " cells" : shown + " of " + total + " cells match";
  }

  input.addEventListener("input", apply);
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && document.querySelector(".detail:target")) {
      location.hash = "matrix";
    } else if (event.key === "/" && document.activeElement !== input) {
      event.preventDefault();
      input.focus();
    }
  });
  box.hidden = false;
  apply();
})();
