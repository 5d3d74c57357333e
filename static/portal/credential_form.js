// The credential form shows the chosen provider's fields only. Without this script every provider's
// fields show and the provider select still decides which are read (the note under it says so).
(function () {
  "use strict";
  function show(select) {
    document.querySelectorAll("[data-provider]").forEach(function (fieldset) {
      fieldset.hidden = fieldset.getAttribute("data-provider") !== select.value;
    });
    document.querySelectorAll("[data-provider-note]").forEach(function (note) { note.hidden = true; });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var select = document.getElementById("id_provider");
    if (!select) { return; }
    show(select);
    select.addEventListener("change", function () { show(select); });
  });
})();
