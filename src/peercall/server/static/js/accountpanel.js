/**
 * The page's part for accounts mode (DOM only): the sign-in screen, the sign-up form of an invite link (or, when
 * someone is signed in already, what to do with the link instead), and the account card (who is signed in, my
 * sign-ins, my sign-in methods, sign out; for administrators: invite links and users, the list loaded again every
 * {@link USERS_RELOAD_MS} while it is open and the page is in view, and when the page comes back into view).
 *
 * The handlers given to {@link bind} do the work (account.js) and return promises: this module shows what they
 * answer, and their errors' messages (`AccountError`). Names and user agents are shown as text, never markup.
 * @module accountpanel
 */

import { browserName } from "./account.js";

/** @param {string} id */
const $ = (id) => /** @type {any} */ (document.getElementById(id));

/**
 * @typedef {object} AccountHandlers
 * @property {(id: string, password: string) => Promise<unknown>} signIn
 * @property {(form: {id: string, name: string, password: string}) => Promise<unknown>} signUp
 * @property {() => Promise<unknown>} signInWithPasskey
 * @property {(form: {id: string, name: string}) => Promise<unknown>} signUpWithPasskey
 * @property {() => Promise<{name: string}>} addPasskey
 * @property {() => void} setInviteAside the user signs in instead of using the invite
 * @property {() => void} keepSignIn signed in already, the user goes on with that sign-in (not the invite)
 * @property {() => Promise<unknown>} signOut
 * @property {() => Promise<unknown>} signOutEverywhere
 * @property {() => Promise<any[]>} sessions
 * @property {(sessionId: string) => Promise<unknown>} endSession
 * @property {() => Promise<{created: number}|null>} password
 * @property {(password: string, current: string) => Promise<unknown>} setPassword
 * @property {() => Promise<unknown>} deletePassword
 * @property {() => Promise<{id: string, name: string, created: number, lastUsed: number|null}[]>} passkeys
 * @property {(id: string) => Promise<unknown>} deletePasskey
 * @property {(admin: boolean) => Promise<{link: string, expires: number}>} invite
 * @property {(after: string|null) => Promise<{users: any[], next: string|null}>} users
 * @property {(id: string, disabled: boolean) => Promise<any>} setDisabled
 * @property {(id: string) => Promise<number>} endUserSessions
 */

/** @type {AccountHandlers|null} */
let handlers = null;
/** @type {string|null} the signed-in user's id (not offered "Disable" on themself) */
let myId = null;
/** @type {string|null} where the next page of users starts */
let usersNext = null;
/** How many pages of users the list shows (1, and one more for each "More"): a reload loads as many. */
let usersPages = 0;
/** How often the open Users list is loaded again while the page is in view (ms): new sign-ups appear. */
const USERS_RELOAD_MS = 15_000;
/** @type {ReturnType<typeof setInterval>|null} the Users list's reloads, while it is open */
let usersTimer = null;
/** Whether a reload of the users is under way (one at a time). */
let usersReloading = false;

/** @param {unknown} err */
const messageOf = (err) => (err instanceof Error ? err.message : String(err));

/**
 * Show `text` in a status or error line (hidden when empty).
 * @param {string} id
 * @param {string} text
 */
function show(id, text) {
  const line = $(id);
  line.textContent = text;
  if (line.classList.contains("form-error")) line.hidden = !text;
}

/**
 * Run `work` with `button` disabled meanwhile; show its error in `where`.
 * @param {HTMLButtonElement|null} button
 * @param {string} where the id of the line for the error
 * @param {() => Promise<unknown>} work
 */
async function busy(button, where, work) {
  const focused = button !== null && document.activeElement === button;
  if (button) button.disabled = true;
  show(where, "");
  try {
    return await work();
  } catch (err) {
    show(where, messageOf(err));
    return undefined;
  } finally {
    if (button) button.disabled = false;
    // Disabled, the button gave the focus up to the page: a keyboard user was sent back to its top.
    if (focused) keepFocus(button.isConnected ? button : $(where));
  }
}

/**
 * Focus `target` if the focus was lost to the page (an action's button was disabled or taken away): a status
 * line can take it too (for its screen reader, which reads what just happened).
 * @param {HTMLElement|null} target
 */
function keepFocus(target) {
  if (!target || (document.activeElement && document.activeElement !== document.body)) return;
  if (!target.matches("button, input, select, textarea, a[href]")) target.tabIndex = -1;
  target.focus({ preventScroll: true });
}

/** @param {number} seconds Unix seconds */
const when = (seconds) =>
  new Date(seconds * 1000).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });

/** @param {AccountHandlers} given */
export function bind(given) {
  handlers = given;
  $("signin-form").addEventListener("submit", async (/** @type {SubmitEvent} */ event) => {
    event.preventDefault();
    const id = $("signin-id").value.trim();
    const password = $("signin-password").value;
    await busy($("signin-submit"), "signin-error", async () => {
      await given.signIn(id, password);
      $("signin-password").value = "";
    });
    if ($("signin-error").textContent) $(id ? "signin-password" : "signin-id").focus();
  });
  $("signup-form").addEventListener("submit", (/** @type {SubmitEvent} */ event) => {
    event.preventDefault();
    const form = {
      id: $("signup-id").value.trim(),
      name: $("signup-name").value,
      password: $("signup-password").value,
    };
    busy($("signup-submit"), "signup-error", async () => {
      await given.signUp(form);
      $("signup-password").value = "";
    });
  });
  $("signup-cancel").addEventListener("click", () => {
    given.setInviteAside();
    showSignIn();
  });
  $("invite-taken-continue").addEventListener("click", () => given.keepSignIn());
  $("invite-taken-sign-out").addEventListener("click", () =>
    busy($("invite-taken-sign-out"), "invite-taken-status", given.signOut),
  );
  $("invite-taken-copy").addEventListener("click", async () => {
    const link = $("invite-taken").dataset.link ?? "";
    try {
      await navigator.clipboard.writeText(link);
      show("invite-taken-status", "Copied the invite link: send it to the person it is for.");
    } catch {
      show("invite-taken-status", `Could not copy: the link is ${link}`);
    }
  });
  $("passkey-signin").addEventListener("click", () => busy($("passkey-signin"), "signin-error", given.signInWithPasskey));
  $("passkey-signup").addEventListener("click", () =>
    busy($("passkey-signup"), "signup-error", () =>
      given.signUpWithPasskey({ id: $("signup-id").value.trim(), name: $("signup-name").value }),
    ),
  );
  $("passkey-add").addEventListener("click", () =>
    busy($("passkey-add"), "passkey-status", async () => {
      const added = await given.addPasskey();
      show("passkey-status", `Passkey “${added.name}” added: you can sign in with it on this device.`);
      if ($("methods-box").open) refreshMethods();
    }),
  );
  // What was wrong is no longer shown once the user changes what they typed.
  $("signin-form").addEventListener("input", () => show("signin-error", ""));
  $("signup-form").addEventListener("input", () => show("signup-error", ""));
  $("sign-out").addEventListener("click", () => busy($("sign-out"), "sessions-status", given.signOut));
  // The top bar's "Account" (one column: the card is last, a page's length away): there, without a `#` in the
  // address (which the page reads for invites and tokens), the focus on its heading.
  $("account-link").addEventListener("click", (/** @type {MouseEvent} */ event) => {
    event.preventDefault();
    const title = $("account-title");
    title.tabIndex = -1;
    $("account-card").scrollIntoView({ block: "start" });
    title.focus({ preventScroll: true });
  });
  $("sign-out-everywhere").addEventListener("click", () =>
    busy($("sign-out-everywhere"), "sessions-status", given.signOutEverywhere),
  );
  $("sessions-box").addEventListener("toggle", () => {
    if ($("sessions-box").open) refreshSessions();
  });
  $("methods-box").addEventListener("toggle", () => {
    if ($("methods-box").open) refreshMethods();
  });
  $("password-form").addEventListener("submit", async (/** @type {SubmitEvent} */ event) => {
    event.preventDefault();
    const changing = !$("password-current-field").hidden;
    const done = await busy($("password-submit"), "methods-status", async () => {
      await given.setPassword($("password-new").value, changing ? $("password-current").value : "");
      return true;
    });
    if (!done) return;
    $("password-new").value = "";
    $("password-current").value = "";
    await refreshMethods();
    show(
      "methods-status",
      changing ? "Password changed." : `Password added: you can also sign in with your id (${myId}) and it.`,
    );
  });
  $("admin-box").addEventListener("toggle", () => {
    if ($("admin-box").open) {
      refreshUsers();
      usersTimer ??= setInterval(() => {
        if (usersShown() && !document.hidden) reloadUsers();
      }, USERS_RELOAD_MS);
    } else {
      stopUsers();
    }
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && usersShown()) reloadUsers(); // back to the tab: who signed up meanwhile
  });
  $("invite-create").addEventListener("click", () =>
    busy($("invite-create"), "invite-status", async () => {
      const invite = await given.invite($("invite-admin").checked);
      $("invite-result").hidden = false;
      $("invite-link").value = invite.link;
      show("invite-status", `Invite link made: it works once, until ${when(invite.expires)}. Send it to them.`);
      $("invite-link").select();
    }),
  );
  $("invite-copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("invite-link").value);
      show("invite-status", "Copied the invite link.");
    } catch {
      $("invite-link").select();
      show("invite-status", "Could not copy: the link is selected, copy it with Ctrl+C (⌘C).");
    }
  });
  $("users-more").addEventListener("click", () => refreshUsers(usersNext));
}

/** Whether the server takes passkeys: show the "Sign in with a passkey" button. */
export function passkeysSupported(supported) {
  for (const id of ["passkey-signin", "passkey-or", "passkey-signup", "passkey-add"]) $(id).hidden = !supported;
}

/**
 * Accounts mode, nobody signed in: the sign-in screen instead of the page.
 * @param {string} [message] why (e.g. the sign-in ended), shown as an error
 */
export function showSignIn(message = "") {
  screen(true);
  $("signup-form").hidden = true;
  $("invite-taken").hidden = true;
  $("signin-form").hidden = false;
  $("signin-screen").setAttribute("aria-labelledby", "signin-title");
  show("signin-error", message);
  $("signin-password").value = "";
  $(($("signin-id").value ? "signin-password" : "signin-id")).focus();
}

/**
 * The page was opened from an invite link, and nobody is signed in: the sign-up form.
 * @param {string} [message] what went wrong before (e.g. the server could not say who is signed in), as an error
 */
export function showSignUp(message = "") {
  screen(true);
  $("signin-form").hidden = true;
  $("invite-taken").hidden = true;
  $("signup-form").hidden = false;
  $("signin-screen").setAttribute("aria-labelledby", "signup-title");
  show("signup-error", message);
  $("signup-id").focus();
}

/**
 * The page was opened from an invite link, but someone is signed in here already: the invite is for someone new.
 * Offers to go on as them, to copy the link (to send it), or to sign out (then the sign-up form, for the invite).
 * @param {{name: string}} me who is signed in
 * @param {string} token the invite's token
 */
export function showInviteTaken(me, token) {
  screen(true);
  $("signin-form").hidden = true;
  $("signup-form").hidden = true;
  $("invite-taken").hidden = false;
  $("invite-taken").dataset.link = `${location.origin}${location.pathname}#invite=${encodeURIComponent(token)}`;
  $("signin-screen").setAttribute("aria-labelledby", "invite-taken-title");
  $("invite-taken-name").textContent = me.name;
  $("invite-taken-me").textContent = me.name;
  show("invite-taken-status", "");
  $("invite-taken-continue").focus();
}

/**
 * Someone is signed in: the page, with the account card instead of the name form.
 * @param {{id: string, name: string, admin: boolean}} me
 */
export function signedIn(me) {
  myId = me.id;
  screen(false);
  $("account-name").textContent = me.name;
  $("account-id").textContent = me.name === me.id ? "" : `(${me.id})`;
  $("account-admin").hidden = !me.admin;
  $("admin-box").hidden = !me.admin;
  $("invite-result").hidden = true;
  $("invite-link").value = "";
  $("password-user").value = me.id;
  for (const id of ["sessions-status", "invite-status", "users-status", "methods-status"]) show(id, "");
  if ($("sessions-box").open) refreshSessions();
  if ($("methods-box").open) refreshMethods();
  if (me.admin && $("admin-box").open) refreshUsers();
}

/** @param {boolean} signingIn the sign-in screen (true) or the page (false) */
function screen(signingIn) {
  if (signingIn) stopUsers();
  document.body.dataset.account = signingIn ? "signed-out" : "signed-in";
  $("signin-screen").hidden = !signingIn;
  for (const col of document.querySelectorAll(".layout > .col")) /** @type {HTMLElement} */ (col).hidden = signingIn;
  $("identity-card").hidden = true;
  $("account-card").hidden = signingIn;
}

/** @param {string} [done] what was just done, to say once the list is shown again */
async function refreshSessions(done = "") {
  if (!handlers) return;
  const given = handlers;
  const list = $("sessions");
  show("sessions-status", "Loading…");
  const sessions = await busy(null, "sessions-status", given.sessions);
  if (!Array.isArray(sessions)) return;
  show("sessions-status", [done, sessions.length ? "" : "No sign-ins."].filter(Boolean).join(" "));
  list.replaceChildren(
    ...sessions.map((s) => {
      const item = document.createElement("li");
      const what = document.createElement("span");
      what.className = "what";
      const name = browserName(String(s.userAgent ?? ""));
      what.textContent = s.current ? `${name} (this browser)` : name;
      const detail = document.createElement("span");
      detail.className = "hint";
      detail.textContent = `Last used ${when(s.lastUsed)} · signed in ${when(s.created)}`;
      what.append(detail);
      const end = document.createElement("button");
      end.type = "button";
      end.textContent = "Sign out";
      const which = s.current ? "this browser" : `${name}, last used ${when(s.lastUsed)}`;
      end.setAttribute("aria-label", `Sign out ${which}`);
      end.addEventListener("click", async () => {
        const done = await busy(end, "sessions-status", async () => {
          await given.endSession(s.id);
          return true;
        });
        if (done && !s.current) refreshSessions(`Signed out ${name}, last used ${when(s.lastUsed)}.`);
      });
      item.append(what, end);
      return item;
    }),
  );
}

/**
 * One line of a list: what (with a hint under it) and, if given, a button.
 * @param {string} text
 * @param {string} hint
 * @param {HTMLButtonElement|null} button
 */
function listItem(text, hint, button) {
  const item = document.createElement("li");
  const what = document.createElement("span");
  what.className = "what";
  what.textContent = text;
  const detail = document.createElement("span");
  detail.className = "hint";
  detail.textContent = hint;
  what.append(detail);
  item.append(what);
  if (button) item.append(button);
  return item;
}

/**
 * A button that runs `work` (its error shown in the methods' status line), then shows the methods again.
 * @param {string} text
 * @param {string} label its accessible name
 * @param {() => Promise<unknown>} work
 */
function methodButton(text, label, work) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = text;
  button.setAttribute("aria-label", label);
  button.addEventListener("click", async () => {
    const done = await busy(button, "methods-status", async () => {
      await work();
      return true;
    });
    if (done) {
      await refreshMethods();
      keepFocus($("methods-status")); // (the list is new: what was clicked may be gone)
    }
  });
  return button;
}

/** Show my sign-in methods (password, passkeys), and the password form as "add" or "change". */
async function refreshMethods() {
  if (!handlers) return;
  const given = handlers;
  const found = await busy(null, "methods-status", () => Promise.all([given.password(), given.passkeys()]));
  if (!Array.isArray(found)) return;
  const [password, passkeys] = found;
  const items = [];
  if (password) {
    const remove = methodButton("Remove", "Remove my password", given.deletePassword);
    items.push(listItem("Password", `Set ${when(password.created)}`, remove));
  }
  for (const key of passkeys) {
    const used = key.lastUsed ? `last used ${when(key.lastUsed)}` : "not used yet";
    // Named after its browser ("Chrome on Linux"); one made at sign-up, or by an older page, is just "Passkey".
    const saysPasskey = /passkey/i.test(key.name);
    const label = saysPasskey ? `Delete ${key.name}` : `Delete passkey ${key.name}`;
    const remove = methodButton("Delete", label, () => given.deletePasskey(key.id));
    const added = `${saysPasskey ? "Added" : "Passkey · added"} ${when(key.created)} · ${used}`;
    items.push(listItem(key.name, added, remove));
  }
  $("methods").replaceChildren(...items);
  $("password-current-field").hidden = !password;
  $("password-title").textContent = password ? "Change your password" : "Add a password";
  $("password-submit").textContent = password ? "Change the password" : "Add the password";
}

/** @param {string|null} [after] the next page (null: from the start) */
async function refreshUsers(after = null) {
  if (!handlers) return;
  const given = handlers;
  const page = await busy($("users-more"), "users-status", () => given.users(after));
  if (!page) return;
  usersNext = page.next;
  usersPages = after ? usersPages + 1 : 1;
  $("users-more").hidden = !page.next;
  if (after) $("users").append(...page.users.map((user) => userItem(user)));
  else placeUsers(page.users);
}

/** Whether the Users list is on screen (signed in as an administrator, Administration open). */
function usersShown() {
  return document.body.dataset.account === "signed-in" && !$("admin-box").hidden && $("admin-box").open;
}

/** Stop loading the users again (the list is closed, or nobody is signed in). */
function stopUsers() {
  if (usersTimer !== null) clearInterval(usersTimer);
  usersTimer = null;
}

/**
 * Load the users shown again, quietly (as many pages as shown; a failure is only logged, the next try may do),
 * and update the list in place: what the administrator is doing (focus, the status line) stays.
 */
async function reloadUsers() {
  if (!handlers || usersReloading) return;
  const given = handlers;
  usersReloading = true;
  try {
    const users = [];
    /** @type {string|null} */ let next = null;
    for (let page = 0; page < Math.max(1, usersPages); page += 1) {
      const found = await given.users(next);
      users.push(...found.users);
      next = found.next;
      if (!next) break;
    }
    if (!usersShown()) return;
    usersNext = next;
    $("users-more").hidden = !next;
    placeUsers(users);
  } catch (err) {
    console.info("[accountpanel] could not load the users again:", err);
  } finally {
    usersReloading = false;
  }
}

/**
 * Show `users` in this order, keeping the items of those shown as they are (a focused button stays focused).
 * @param {{id: string, name: string, admin: boolean, disabled: boolean}[]} users
 */
function placeUsers(users) {
  const list = $("users");
  /** @type {Map<string, HTMLElement>} */
  const shown = new Map([...list.children].map((item) => [item.dataset.user, item]));
  const items = users.map((user) => {
    const item = shown.get(user.id);
    return item && item.dataset.shown === userFacts(user) ? item : userItem(user);
  });
  for (const item of [...list.children]) if (!items.includes(item)) item.remove();
  items.forEach((item, index) => {
    if (list.children[index] !== item) list.insertBefore(item, list.children[index] ?? null);
  });
}

/** @param {{name: string, admin: boolean, disabled: boolean}} user what its item shows, as one string */
const userFacts = (user) => JSON.stringify([user.name, user.admin, user.disabled]);

/** @param {{id: string, name: string, admin: boolean, disabled: boolean}} user */
function userItem(user) {
  const given = /** @type {AccountHandlers} */ (handlers);
  const item = document.createElement("li");
  item.dataset.user = user.id;
  const fill = (/** @type {typeof user} */ u) => {
    const what = document.createElement("span");
    what.className = "what";
    what.textContent = u.name;
    const detail = document.createElement("span");
    detail.className = "hint";
    const facts = [u.id, u.admin ? "administrator" : "", u.disabled ? "disabled" : ""];
    detail.textContent = facts.filter(Boolean).join(" · ");
    what.append(detail);
    item.dataset.disabled = String(u.disabled);
    item.dataset.shown = userFacts(u);
    item.replaceChildren(what);
    if (u.id === myId) return;
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.textContent = u.disabled ? "Enable" : "Disable";
    toggle.setAttribute("aria-label", `${u.disabled ? "Enable" : "Disable"} ${u.id}`);
    toggle.addEventListener("click", async () => {
      const changed = await busy(toggle, "users-status", () => given.setDisabled(u.id, !u.disabled));
      if (changed) {
        fill(changed); // (its buttons are new: the focus goes on to the one that replaced this one)
        show("users-status", `${changed.id} is ${changed.disabled ? "disabled: their sign-ins ended" : "enabled"}.`);
        keepFocus(item.querySelector(".actions button"));
      }
    });
    const end = document.createElement("button");
    end.type = "button";
    end.textContent = "End sign-ins";
    end.setAttribute("aria-label", `End sign-ins of ${u.id}`);
    end.addEventListener("click", async () => {
      const ended = await busy(end, "users-status", () => given.endUserSessions(u.id));
      if (ended !== undefined) show("users-status", `Ended ${ended} sign-in${ended === 1 ? "" : "s"} of ${u.id}.`);
    });
    const actions = document.createElement("span");
    actions.className = "actions";
    actions.append(toggle, end);
    item.append(actions);
  };
  fill(user);
  return item;
}
