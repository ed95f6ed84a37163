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
  var cells = Array.prototype.slice.call(document.querySelectorAll(".cell[data-id]"));
  var keys = cells.map(function (cell) {
    return [cell.dataset.id.toLowerCase(), cell.dataset.name.toLowerCase()];
  });

  function apply() {
    var query = input.value.trim().toLowerCase();
    var shown = 0;
    cells.forEach(function (cell, i) {
      var match = query === "" || keys[i][0].indexOf(query) !== -1 || keys[i][1].indexOf(query) !== -1;
      cell.hidden = !match;
      if (match) {
        shown += 1;
      }
    });
    status.textContent = query === ""
      ? cells.length + " cells"
      : shown + " of " + cells.length + " cells match";
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
