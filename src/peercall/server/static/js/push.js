/**
 * "Ring this device when peercall is closed": Web Push (docs/push.md). The user opts in with a checkbox; this
 * module asks the Notification permission (on that click), uses the app's service worker (offline.js registers
 * `sw.js`, which imports the push handlers of sw-push.js), subscribes its pushManager with the server's key
 * (`GET api/push`), and posts the subscription to the server (`POST api/push/subscriptions`); unticking
 * unsubscribes and tells the server. Every URL is relative to the page (a server under a path works).
 *
 * Owns the checkbox's state and this browser's push device id (localStorage: a subscription belongs to the
 * browser, not to a tab). Once the server keeps the subscription, it leaves the service worker what it needs to
 * replace it without a token (sw-push.js, `pushsubscriptionchange`): the user, the device id, and the subscription's
 * endpoint and `auth` secret (in the Cache API, REPLACEMENT; nothing any script of this origin could not read from
 * `pushManager.getSubscription()` anyway). `PushRing` knows no DOM; `bindPushControl` wires it to the page's
 * checkbox.
 * @module push
 */

import { registerServiceWorker } from "./offline.js";
import { recall, remember } from "./storage.js";

/** localStorage: this browser's id for its push subscription. */
const DEVICE_KEY = "peercall.push.device";
/** The Cache API entry the service worker replaces the subscription with (sw-push.js reads it). */
const REPLACEMENT = { cache: "peercall-push", key: "push-replacement" };

/**
 * Keep (or with null forget) what the service worker needs to replace the subscription.
 * @param {{user: string, device: string, endpoint: string, auth: string}|null} record
 */
async function keepReplacement(record) {
  try {
    const cache = await caches.open(REPLACEMENT.cache);
    const key = new URL(REPLACEMENT.key, location.href).href;
    if (record) await cache.put(key, new Response(JSON.stringify(record)));
    else await cache.delete(key);
  } catch (err) {
    console.info(`[push] the service worker cannot replace the subscription by itself: ${err}`);
  }
}

/** What the server answered to a kept subscription, and the subscription: the replacement record. */
function replacement(kept, subscription) {
  const json = subscription.toJSON();
  return { user: kept.user, device: kept.device, endpoint: json.endpoint, auth: json.keys.auth };
}

/**
 * What the control shows: hidden (the server has push off, or this browser cannot), off, on, or why not.
 * @typedef {{shown: boolean, on: boolean, busy: boolean, problem: string|null}} PushView
 */

/** base64url to bytes, for `applicationServerKey`. */
function fromBase64Url(text) {
  const b64 = text.replaceAll("-", "+").replaceAll("_", "/") + "=".repeat((4 - (text.length % 4)) % 4);
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

/**
 * Whether a subscription's key is `key`.
 * @param {ArrayBuffer|null} subscribed
 * @param {Uint8Array} key
 */
function sameKey(subscribed, key) {
  if (!subscribed) return false;
  const bytes = new Uint8Array(subscribed);
  return bytes.length === key.length && bytes.every((b, i) => b === key[i]);
}

/** This browser's push device id, made once. */
function deviceId() {
  let id = recall(DEVICE_KEY, localStorage);
  if (!id || !/^[A-Za-z0-9_.@-]{1,64}$/.test(id)) {
    id = `browser-${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
    remember(DEVICE_KEY, id, localStorage);
  }
  return id;
}

export class PushRing extends EventTarget {
  /** @type {string|null} the server's VAPID public key, once asked */ #key = null;
  /** @type {PushView} */ #view = { shown: false, on: false, busy: false, problem: null };
  #authHeaders;

  /** @param {{authHeaders: () => Record<string, string>}} deps */
  constructor({ authHeaders }) {
    super();
    this.#authHeaders = authHeaders;
  }

  /** @returns {PushView} */
  view() {
    return { ...this.#view };
  }

  #set(changes) {
    this.#view = { ...this.#view, ...changes };
    this.dispatchEvent(new Event("change"));
  }

  /** Whether this browser can be pushed at all. */
  get supported() {
    return "serviceWorker" in navigator && "PushManager" in globalThis && "Notification" in globalThis;
  }

  /** Ask the server whether it rings closed apps, and show whether this browser is subscribed (once connected). */
  async refresh() {
    if (!this.supported) return;
    try {
      const answer = await fetch(new URL("api/push", location.href), { headers: { accept: "application/json" } });
      const body = answer.ok ? await answer.json() : null;
      this.#key = body?.enabled ? body.applicationServerKey : null;
    } catch {
      this.#key = null;
    }
    if (!this.#key) {
      this.#set({ shown: false });
      return;
    }
    const registration = await navigator.serviceWorker.getRegistration();
    let subscription = await registration?.pushManager.getSubscription();
    if (subscription && !sameKey(subscription.options.applicationServerKey, fromBase64Url(this.#key))) {
      await subscription.unsubscribe(); // made with a key the server no longer signs with: it would never ring
      subscription = null;
    }
    const on = Boolean(subscription) && Notification.permission === "granted";
    this.#set({ shown: true, on, problem: null });
    if (on && subscription) {
      // Tell the server again (it drops a subscription its push service said is gone; the browser may renew one).
      this.#post("POST", { device: deviceId(), subscription: subscription.toJSON() })
        .then((kept) => keepReplacement(replacement(kept, subscription)))
        .catch((err) => console.info(`[push] could not renew the subscription on the server: ${err}`));
    }
  }

  /** Opt in (a click): permission, service worker, subscription, and the server told. */
  async enable() {
    if (!this.#key) return;
    this.#set({ busy: true, problem: null });
    try {
      const permission = await Notification.requestPermission();
      if (permission !== "granted") {
        throw new Error("Notifications are blocked for this site: allow them in the browser's site settings.");
      }
      if (!(await navigator.serviceWorker.getRegistration()) && !(await registerServiceWorker())) {
        throw new Error("this page has no service worker (it needs https)");
      }
      const registration = await navigator.serviceWorker.ready;
      const subscription =
        (await registration.pushManager.getSubscription()) ??
        (await registration.pushManager.subscribe({
          userVisibleOnly: true,
          applicationServerKey: fromBase64Url(this.#key),
        }));
      const kept = await this.#post("POST", { device: deviceId(), subscription: subscription.toJSON() });
      await keepReplacement(replacement(kept, subscription));
      this.#set({ on: true, busy: false });
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      this.#set({ on: false, busy: false, problem: `This device cannot ring while peercall is closed: ${why}` });
    }
  }

  /** Opt out: unsubscribe, and the server forgets this browser. */
  async disable() {
    this.#set({ busy: true, problem: null });
    try {
      const registration = await navigator.serviceWorker.getRegistration();
      const subscription = await registration?.pushManager.getSubscription();
      await subscription?.unsubscribe();
      await keepReplacement(null);
      await this.#post("DELETE", { device: deviceId() });
      this.#set({ on: false, busy: false });
    } catch (err) {
      this.#set({ busy: false, problem: err instanceof Error ? err.message : String(err) });
    }
  }

  async #post(method, body) {
    const answer = await fetch(new URL("api/push/subscriptions", location.href), {
      method,
      headers: { "content-type": "application/json", ...this.#authHeaders() },
      body: JSON.stringify(body),
    });
    if (!answer.ok) {
      const error = await answer.json().catch(() => null);
      throw new Error(error?.error?.message ?? `the server answered ${answer.status}`);
    }
    return answer.json();
  }
}

/**
 * Wire `push` to the page's checkbox (`#push-ring`, inside its label `#push-ring-label`) and its hint.
 * @param {PushRing} push
 */
export function bindPushControl(push) {
  const box = /** @type {HTMLInputElement} */ (document.getElementById("push-ring"));
  const label = /** @type {HTMLElement} */ (document.getElementById("push-ring-label"));
  const hint = /** @type {HTMLElement} */ (document.getElementById("push-ring-hint"));
  const render = () => {
    const shown = push.view();
    label.hidden = !shown.shown;
    box.checked = shown.on;
    box.disabled = shown.busy;
    hint.hidden = !shown.shown || !shown.problem;
    hint.textContent = shown.problem ?? "";
  };
  push.addEventListener("change", render);
  box.addEventListener("change", () => (box.checked ? push.enable() : push.disable()));
  render();
}
