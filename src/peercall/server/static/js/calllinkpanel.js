/**
 * Call links on the page (DOM only): the "Call alice?" offer of the link this page was opened with, and
 * "Copy my call link".
 *
 * main.js hands it what to show (`render`) and gets the user's intents back through the handlers given to
 * `bind()`.
 * @module calllinkpanel
 */

import { callLinkFor } from "./calllink.js";

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const el = {
  box: $("call-link"),
  offer: $("call-link-offer"),
  peer: $("call-link-peer"),
  call: /** @type {HTMLButtonElement} */ ($("call-link-call")),
  dismiss: /** @type {HTMLButtonElement} */ ($("call-link-dismiss")),
  hint: $("call-link-hint"),
  problem: $("call-link-problem"),
  mine: $("my-call-link"),
  copy: /** @type {HTMLButtonElement} */ ($("copy-call-link")),
  copyStatus: $("copy-call-link-status"),
};

/** @type {string|null} whose link the Copy button copies */
let myId = null;
/** Whether the offer's Call button has been focused (once: when it first becomes usable). */
let focused = false;

/**
 * @param {object} handlers
 * @param {(peerId: string) => void} handlers.call the user clicked Call in the offer
 * @param {() => void} handlers.dismiss the user set the link aside ("Not now", or closed its problem)
 */
export function bind(handlers) {
  el.call.addEventListener("click", () => {
    const peer = el.call.dataset.peer;
    if (peer) handlers.call(peer);
  });
  el.dismiss.addEventListener("click", () => handlers.dismiss());
  el.copy.addEventListener("click", () => copyMyLink());
}

/**
 * @param {object} shown
 * @param {import("./calllink.js").CallLinkView} shown.link
 * @param {string|null} shown.me our id while connected, else null
 * @param {boolean} shown.inCall a call (or the audio check) is going on
 * @param {string} shown.connectFirst what to do before the link can ring (connect, sign in)
 */
export function render({ link, me, inCall, connectFirst }) {
  el.box.hidden = !link.peer && !link.problem;
  el.offer.hidden = !link.peer;
  el.problem.hidden = !link.problem;
  el.problem.textContent = link.problem ?? "";
  el.call.hidden = !link.peer;
  el.dismiss.textContent = link.peer ? "Not now" : "Close";
  if (link.peer) {
    el.peer.textContent = link.peer;
    el.call.dataset.peer = link.peer;
    el.call.disabled = !me || inCall;
    el.hint.textContent = !me ? connectFirst : inCall ? "You can call once this call has ended." : "";
    el.hint.hidden = !el.hint.textContent;
    // Just connected (or signed in): the next thing to do is to call, or not; later reconnects leave focus alone.
    if (!el.call.disabled && !focused) {
      focused = true;
      el.call.focus();
    }
  }
  if (me !== myId) el.copyStatus.textContent = "";
  myId = me;
  el.mine.hidden = !me;
}

/** Put our call link on the clipboard, and show it (to copy by hand where the clipboard is not allowed). */
async function copyMyLink() {
  if (!myId) return;
  const link = callLinkFor(myId);
  try {
    await navigator.clipboard.writeText(link);
    el.copyStatus.textContent = `Copied: ${link}`;
  } catch (err) {
    console.info("[calllinkpanel] no clipboard:", err);
    el.copyStatus.textContent = `Your call link: ${link}`;
  }
}
