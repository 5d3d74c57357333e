// Copy-to-clipboard for the one-time secret pages (no framework, no CDN).
(function () {
  "use strict";
  function copy(button) {
    var target = document.getElementById(button.getAttribute("data-copy-target"));
    var status = button.parentNode.querySelector(".portal-copied");
    if (!target) { return; }
    function done(ok) {
      if (status) { status.textContent = ok ? "Copied." : "Select the key and copy it by hand."; }
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(target.value).then(function () { done(true); }, function () { done(false); });
      return;
    }
    // Plain-HTTP hosts other than localhost have no clipboard API: fall back to a selection copy.
    target.focus();
    target.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    done(ok);
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy-target]");
    if (button) { event.preventDefault(); copy(button); }
  });
})();
