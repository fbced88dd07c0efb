/**
 * Working without the server: the service worker that keeps the app shell (sw.js), and whether the server can be
 * reached at all, so that the page says "No connection to the server" instead of looking merely idle.
 *
 * Owns the registration of the service worker and what is known of the server's reachability: whether this
 * device is offline (the browser says so), and whether the server answered the page's first question (/healthz,
 * asked by identity.js). Touches no element of the page (ui.js shows `problem`) and knows nothing of signaling:
 * once connected, the signaling state says more than this does.
 *
 * Events: `change` (the problem changed), `retry` (time to ask the server again: after a growing pause, or at
 * once when the device comes back online).
 * @module offline
 */

/** Pauses between two questions to a server that did not answer, in ms: then the last one again and again. */
const RETRY_MS = [2000, 4000, 8000, 15000, 30000];

/**
 * Register the service worker (scope: the app's folder), unless the browser has none (or the page is not secure:
 * then `register` refuses, and the page works online as before).
 * @returns {Promise<ServiceWorkerRegistration|null>}
 */
export async function registerServiceWorker() {
  if (!("serviceWorker" in navigator)) return null;
  try {
    return await navigator.serviceWorker.register(new URL("sw.js", location.href), { updateViaCache: "none" });
  } catch (err) {
    console.warn("[offline] no service worker: the app will not open without the server:", err);
    return null;
  }
}

/** Whether the server can be reached, as far as the page can tell before it connects. */
export class Reachability extends EventTarget {
  /** @type {"unknown"|"answered"|"unreachable"} */ #server = "unknown";
  /** @type {ReturnType<typeof setTimeout>|undefined} */ #timer;
  #attempt = 0;

  constructor() {
    super();
    addEventListener("offline", () => this.#changed());
    addEventListener("online", () => {
      this.#changed();
      if (this.#server === "unreachable") this.retryNow();
    });
  }

  /**
   * What keeps the page from the server, once it did not answer: "device" (this device is offline, too) or
   * "server"; null while nothing is known to be wrong. `navigator.onLine` alone proves nothing: a browser on a
   * machine with no network but loopback says offline, and a server on that machine still answers.
   * @returns {"device"|"server"|null}
   */
  get problem() {
    if (this.#server !== "unreachable") return null;
    return navigator.onLine === false ? "device" : "server";
  }

  /** Whether the server has answered since the page opened (its first question, or a connection). */
  get answered() {
    return this.#server === "answered";
  }

  /**
   * The server answered (or did not): on no answer, ask again (a `retry` event) after a growing pause.
   * @param {boolean} yes
   */
  serverAnswered(yes) {
    clearTimeout(this.#timer);
    this.#server = yes ? "answered" : "unreachable";
    if (yes) {
      this.#attempt = 0;
    } else {
      const pause = RETRY_MS[Math.min(this.#attempt, RETRY_MS.length - 1)];
      this.#attempt += 1;
      this.#timer = setTimeout(() => this.retryNow(), pause);
    }
    this.#changed();
  }

  /** Ask the server again now (the user's "Retry now", or the device came back online). */
  retryNow() {
    if (this.#server !== "unreachable") return;
    clearTimeout(this.#timer);
    this.dispatchEvent(new Event("retry"));
  }

  #changed() {
    this.dispatchEvent(new Event("change"));
  }
}
