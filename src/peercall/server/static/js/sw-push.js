/**
 * The service worker's push handlers (`push`, `notificationclick`; docs/push.md): sw.js imports this file first.
 * A push says a call rings ("incoming-call": a notification with Accept and Decline), ended unanswered
 * ("missed-call": it replaces the notification of the same call, by its tag), or stopped ringing otherwise
 * ("call-ended", answered or declined on some device: the notification goes). Chromium requires a notification
 * for every push unless a page of the app is visible (`userVisibleOnly`; a silent push costs a small budget, and
 * then Chromium shows "This site has been updated in the background" itself): so "call-ended" replaces the
 * notification with a short, silent "Call answered on another device" or "Call declined", closed ENDED_SHOWN_MS
 * later, after the push event is over (a page of the app that is visible needs none).
 *
 * Accept opens or focuses the app at `?accept=<callId>`, which connects and accepts that call when it rings there;
 * Decline posts the push's decline capability to `api/calls/<callId>/decline`, without opening anything. URLs are
 * relative to the worker's scope (the app's folder).
 *
 * `self.peercallPush` exposes the handlers for tests (`show(payload)`, `click(action, payload)`,
 * `replaceSubscription(oldSubscription, newSubscription)`).
 */

/* global self, clients */

/** Where the page left what replaces the subscription (push.js `keepReplacement`). */
const REPLACEMENT = { cache: "peercall-push", key: "push-replacement" };

/** How long the replacement of a call's notification that ended elsewhere stays. */
const ENDED_SHOWN_MS = 4000;

/** @param {{name?: string|null, from: string}} data */
function who(data) {
  return data.name ? `${data.name} (${data.from})` : data.from;
}

/** Show what a push says. */
async function show(data) {
  if (!data || typeof data.callId !== "string" || typeof data.from !== "string") {
    return self.registration.showNotification("peercall", { body: "Open peercall to see what happened." });
  }
  if (data.type === "incoming-call") {
    return self.registration.showNotification(`Incoming call from ${who(data)}`, {
      tag: data.callId,
      body: "Tap to answer in peercall.",
      actions: [
        { action: "accept", title: "Accept" },
        { action: "decline", title: "Decline" },
      ],
      requireInteraction: true,
      renotify: true,
      timestamp: Math.round(data.at * 1000),
      data,
    });
  }
  if (data.type === "call-ended") return ended(data);
  return self.registration.showNotification(`Missed call from ${who(data)}`, {
    tag: data.callId,
    body: "They called while peercall was closed.",
    timestamp: Math.round(data.at * 1000),
    data,
  });
}

/** The call stopped ringing (answered or declined somewhere): its notification goes. */
async function ended(data) {
  const shown = await self.registration.getNotifications({ tag: data.callId });
  for (const n of shown) n.close();
  const windows = await clients.matchAll({ type: "window", includeUncontrolled: true });
  if (windows.some((w) => w.url.startsWith(self.registration.scope) && w.visibilityState === "visible")) return;
  const title = data.outcome === "answered" ? "Call answered on another device" : "Call declined";
  await self.registration.showNotification(title, {
    tag: data.callId,
    body: `The call from ${who(data)} is no longer ringing.`,
    silent: true,
    timestamp: Math.round(data.at * 1000),
    data,
  });
  // Closed once the push event is over (Chromium counts what is shown when it ends). Should the worker be stopped
  // before, the notification stays: a quiet note, not a ringing call.
  setTimeout(async () => {
    for (const n of await self.registration.getNotifications({ tag: data.callId })) {
      if (n.data?.type === "call-ended") n.close();
    }
  }, ENDED_SHOWN_MS);
}

/** Decline from the notification: the capability in the push is the only authority needed. */
async function decline(data) {
  const url = new URL(`api/calls/${encodeURIComponent(data.callId)}/decline`, self.registration.scope);
  const answer = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ decline: data.decline }),
  });
  return answer.status;
}

/** Open the app, or focus a window of it; with `callId`, to accept that call. */
async function openApp(callId) {
  const scope = self.registration.scope;
  const windows = await clients.matchAll({ type: "window", includeUncontrolled: true });
  const open = windows.find((w) => w.url.startsWith(scope));
  if (open) {
    if (callId) open.postMessage({ type: "peercall-accept", callId });
    return open.focus();
  }
  return clients.openWindow(callId ? new URL(`?accept=${encodeURIComponent(callId)}`, scope).href : scope);
}

/** What a click on the notification (`action`: "accept", "decline" or "" for the body) does. */
async function click(action, data) {
  if (data?.type === "incoming-call" && action === "decline") return decline(data);
  if (data?.type === "incoming-call") return openApp(data.callId);
  return openApp(null);
}

self.addEventListener("push", (event) => {
  let data = null;
  try {
    data = event.data ? event.data.json() : null;
  } catch {
    data = null;
  }
  event.waitUntil(show(data));
});

/**
 * The browser replaced (or dropped) this worker's push subscription: subscribe again if need be, and tell the
 * server, proving the old one with its `auth` secret (the worker has no token; docs/push.md). Without what the page
 * left (it never subscribed here, or was unticked), nothing is done: the page posts it again when next opened.
 * @param {PushSubscription|null} oldSubscription
 * @param {PushSubscription|null} newSubscription
 * @returns {Promise<number|null>} the server's status, or null when nothing was sent
 */
async function replaceSubscription(oldSubscription, newSubscription) {
  const cache = await caches.open(REPLACEMENT.cache);
  const key = new URL(REPLACEMENT.key, self.registration.scope).href;
  const stored = await cache.match(key);
  if (!stored) return null;
  const record = await stored.json();
  const old = oldSubscription?.toJSON() ?? { endpoint: record.endpoint, keys: { auth: record.auth } };
  let current = newSubscription ?? (await self.registration.pushManager.getSubscription());
  if (!current) {
    const answer = await fetch(new URL("api/push", self.registration.scope));
    const body = answer.ok ? await answer.json() : null;
    if (!body?.enabled) return null;
    current = await self.registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: body.applicationServerKey,
    });
  }
  const json = current.toJSON();
  const answer = await fetch(new URL("api/push/subscriptions/replace", self.registration.scope), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      user: record.user,
      device: record.device,
      old: { endpoint: old.endpoint, auth: old.keys?.auth ?? record.auth },
      subscription: json,
    }),
  });
  if (answer.ok) {
    await cache.put(key, new Response(JSON.stringify({ ...record, endpoint: json.endpoint, auth: json.keys.auth })));
  }
  return answer.status;
}

self.addEventListener("pushsubscriptionchange", (event) => {
  event.waitUntil(
    replaceSubscription(event.oldSubscription ?? null, event.newSubscription ?? null).catch((err) =>
      console.info(`[push] could not replace the push subscription: ${err}`),
    ),
  );
});

self.addEventListener("notificationclick", (event) => {
  const data = event.notification.data;
  event.notification.close();
  event.waitUntil(click(event.action, data));
});

self.peercallPush = { show, click, replaceSubscription };
