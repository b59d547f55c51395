// Herald's console: the one script. Pages work without it; it adds "copy" buttons beside
// values marked data-copy (DNS records) and nothing else.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-copy]").forEach(function (el) {
    if (!navigator.clipboard) { return; }
    var b = document.createElement("button");
    b.type = "button";
    b.className = "copy";
    b.textContent = "Copy";
    b.setAttribute("aria-label", "Copy " + (el.getAttribute("data-copy-label") || "the value"));
    b.addEventListener("click", function () {
      navigator.clipboard.writeText(el.textContent.trim()).then(function () { b.textContent = "Copied"; });
    });
    el.insertAdjacentElement("afterend", b);
  });
});
