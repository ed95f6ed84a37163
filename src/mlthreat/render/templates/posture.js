// The posture page's system picker: shows one system's section and its rows of the gap table,
// or everything. Reads only value and data- attributes and sets only the hidden property, so
// no data is ever parsed as HTML.
(function () {
  "use strict";
  var picker = document.querySelector(".picker");
  var select = document.getElementById("view-select");
  if (!picker || !select) {
    return;
  }
  var sections = document.querySelectorAll(".system-view[data-system]");
  var rows = document.querySelectorAll(".gap-table tbody tr[data-system]");
  function show(slug) {
    Array.prototype.forEach.call(sections, function (el) {
      el.hidden = slug !== "" && el.dataset.system !== slug;
    });
    Array.prototype.forEach.call(rows, function (el) {
      el.hidden = slug !== "" && el.dataset.system !== slug;
    });
  }
  select.addEventListener("change", function () {
    show(select.value);
  });
  picker.hidden = false;
  show(select.value);
}());
