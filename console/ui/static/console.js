// The console's one script: it keeps the live sections fresh and copies
// the ID. Every form works without it.
"use strict";

// refreshEvery is how often a live section is fetched again.
const refreshEvery = 2000;

// A section with data-live="URL" is replaced by the fragment at URL every
// refreshEvery, unless the owner is typing in it. A session that ended
// sends the page to the login form.
function keepLive(el) {
  setTimeout(async () => {
    try {
      const r = await fetch(el.dataset.live, { credentials: "same-origin", cache: "no-store" });
      if (r.redirected || r.status === 401 || r.status === 403) {
        location.assign("/login");
        return;
      }
      if (r.ok) {
        const html = await r.text();
        if (!el.contains(document.activeElement)) {
          el.innerHTML = html;
        }
        el.removeAttribute("data-stale");
      } else {
        el.setAttribute("data-stale", "");
      }
    } catch (e) {
      el.setAttribute("data-stale", ""); // the daemon is restarting; try again
    }
    keepLive(el);
  }, refreshEvery);
}

// A button with data-copy="ID" copies the text of the element with that
// id, and says so.
async function copy(ev) {
  const b = ev.currentTarget;
  const text = document.getElementById(b.dataset.copy).textContent.trim();
  try {
    await navigator.clipboard.writeText(text);
    b.textContent = "Copied";
  } catch (e) {
    // No clipboard outside a secure context: select the text instead.
    const range = document.createRange();
    range.selectNodeContents(document.getElementById(b.dataset.copy));
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    b.textContent = "Selected: press Ctrl+C";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-live]").forEach(keepLive);
  document.querySelectorAll("[data-copy]").forEach((b) => b.addEventListener("click", copy));
});
