/**
 * The service worker's Web Push part (docs/push.md), loaded by /sw.js with `importScripts`. A push says a call
 * rings ("incoming-call": a notification with Accept and Decline) or ended unanswered ("missed-call": it replaces
 * the notification of the same call, by its tag). Accept opens or focuses the app at `/?accept=<callId>`, which
 * connects and accepts that call when it rings there; Decline posts the push's decline capability to
 * `/api/calls/<callId>/decline`, without opening anything.
 *
 * `self.peercallPush` exposes the handlers for tests (`show(payload)`, `click(action, payload)`).
 */

/* global self, clients */

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
  return self.registration.showNotification(`Missed call from ${who(data)}`, {
    tag: data.callId,
    body: "They called while peercall was closed.",
    timestamp: Math.round(data.at * 1000),
    data,
  });
}

/** Decline from the notification: the capability in the push is the only authority needed. */
async function decline(data) {
  const answer = await fetch(`/api/calls/${encodeURIComponent(data.callId)}/decline`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ decline: data.decline }),
  });
  return answer.status;
}

/** Open the app, or focus a window of it; with `callId`, to accept that call. */
async function openApp(callId) {
  const windows = await clients.matchAll({ type: "window", includeUncontrolled: true });
  const open = windows.find((w) => new URL(w.url).origin === self.location.origin);
  if (open) {
    if (callId) open.postMessage({ type: "peercall-accept", callId });
    return open.focus();
  }
  return clients.openWindow(callId ? `/?accept=${encodeURIComponent(callId)}` : "/");
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

self.addEventListener("notificationclick", (event) => {
  const data = event.notification.data;
  event.notification.close();
  event.waitUntil(click(event.action, data));
});

self.peercallPush = { show, click };
