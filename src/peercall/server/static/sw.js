/**
 * The service worker: keeps the app shell (the page, its stylesheet, its modules, icons and manifest) so that the
 * app opens without the server, and says so itself ("No connection to the server": main.js, offline.js).
 *
 * The server serves this file at `sw.js` (scope: the app's folder) with `BUILD` filled in (server/webapp.py): the
 * shell's paths, and a version made of the server's version and a hash of those files. A new version is a new
 * script, so the browser installs it and its install fills a new cache; its activation deletes the old ones.
 *
 * Shell files are fetched from the network first, so that an online page always gets the files of the running
 * server (never an old module next to a new page); the cache answers only when the server cannot be reached
 * (a network error, or a proxy's 5xx) or takes longer than NETWORK_TIMEOUT_MS. Anything else (/ws, /api,
 * /ice-servers, /healthz, the accounts API, …) is never cached nor answered here: the browser fetches it as if
 * there were no service worker. A call link (`call/<id>`) opened offline is sent to the cached page.
 *
 * Owns no page state; imports only the push handlers (js/sw-push.js, the push module's).
 */

importScripts("js/sw-push.js");

const BUILD = { version: "dev", shell: [] }; // filled in by the server (server/webapp.py)

const CACHE_PREFIX = "peercall-shell-";
const CACHE = `${CACHE_PREFIX}${BUILD.version}`;
const NETWORK_TIMEOUT_MS = 4000;
const SCOPE = new URL(self.registration.scope);
const PAGE = SCOPE.href; // the app's page (index.html), as cached
const SHELL = new Set(BUILD.shell.map((path) => new URL(path, SCOPE).href));
const CALL_LINK = new RegExp(`^${escapeRegExp(SCOPE.pathname)}call/([^/]+)$`);

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      await cache.addAll([...SHELL].map((url) => new Request(url, { cache: "reload" })));
      await self.skipWaiting(); // the shell is network-first: a new worker may take over open pages at once
    })(),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) {
        if (name.startsWith(CACHE_PREFIX) && name !== CACHE) await caches.delete(name);
      }
      await self.clients.claim();
    })(),
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (url.origin !== SCOPE.origin) return;
  const bare = `${url.origin}${url.pathname}`; // `?call=alice`, `?id=` are the page's own business
  if (request.mode === "navigate") {
    if (bare === PAGE || bare === `${PAGE}index.html`) event.respondWith(networkFirst(request, PAGE));
    else if (CALL_LINK.test(url.pathname)) event.respondWith(callLink(request, url));
    return; // other pages (the two-tab demo, the embed page with its own framing rules): the network's
  }
  if (SHELL.has(bare) && url.search === "") event.respondWith(networkFirst(request, bare));
});

/**
 * The network's answer, or the cached copy when the server cannot be reached.
 * @param {Request} request
 * @param {string} cached the cache key of its shell file
 * @returns {Promise<Response>}
 */
async function networkFirst(request, cached) {
  try {
    const response = await withTimeout(fetch(request), NETWORK_TIMEOUT_MS);
    if (response.status < 500) return response;
    return (await fromCache(cached)) ?? response; // a proxy in front of a stopped server: 502, 503, 504
  } catch (err) {
    const copy = await fromCache(cached);
    if (copy) return copy;
    throw err;
  }
}

/**
 * A call link: the server's answer (a redirect to the page), or without a server the same redirect made here.
 * @param {Request} request
 * @param {URL} url
 * @returns {Promise<Response>}
 */
async function callLink(request, url) {
  try {
    return await withTimeout(fetch(request), NETWORK_TIMEOUT_MS);
  } catch (err) {
    if (!(await fromCache(PAGE))) throw err;
    const segment = url.pathname.match(CALL_LINK)?.[1] ?? "";
    let id = segment;
    try {
      id = decodeURIComponent(segment);
    } catch {
      // not percent-encoding: the page says the link is not valid
    }
    return Response.redirect(`${PAGE}?call=${encodeURIComponent(id)}`, 303);
  }
}

/** @param {string} key @returns {Promise<Response|undefined>} */
async function fromCache(key) {
  const cache = await caches.open(CACHE);
  return cache.match(key);
}

/**
 * @template T
 * @param {Promise<T>} promise
 * @param {number} ms
 * @returns {Promise<T>}
 */
async function withTimeout(promise, ms) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer from the server within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** @param {string} text @returns {string} */
function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
