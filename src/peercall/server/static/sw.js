// The service worker. Minimal until the installable-app (PWA) work brings its own: Web Push only (js/sw-push.js).
importScripts("/js/sw-push.js");
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));
