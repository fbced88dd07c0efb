// The service worker's push handlers (`push`, `notificationclick`): sw.js imports this file first.
