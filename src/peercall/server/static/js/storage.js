/**
 * Small values the page keeps between visits (localStorage) or for the life of the tab (sessionStorage).
 *
 * Storage may be disabled (private windows, policies): remembering is only a convenience, so nothing here
 * throws. Knows nothing of the DOM, the signaling or the call.
 * @module storage
 */

/**
 * Store a value, or with null remove it.
 * @param {string} key
 * @param {string|null} value
 * @param {Storage} storage `localStorage` or `sessionStorage`
 */
export function remember(key, value, storage) {
  try {
    if (value === null) storage.removeItem(key);
    else storage.setItem(key, value);
  } catch {
    // storage disabled: nothing is remembered
  }
}

/**
 * A stored value, or null (none, or storage disabled).
 * @param {string} key
 * @param {Storage} storage `localStorage` or `sessionStorage`
 * @returns {string|null}
 */
export function recall(key, storage) {
  try {
    return storage.getItem(key);
  } catch {
    return null;
  }
}
