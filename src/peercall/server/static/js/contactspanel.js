/**
 * The contacts on the page (DOM only): the Contacts card (the ring setting, requests, the contacts with their
 * presence and their actions, adding one, the blocked users), the "Do not disturb" indicator in the header, and
 * in the People card the search through everyone online (servers that list everyone, when `welcome` said more).
 *
 * main.js hands it the page's view (`render(view)`, with `view.contacts` from contacts.js) and gets the user's
 * intents back through the handlers given to `bind()`. A handler that returns a sentence refused the intent;
 * the panel shows why.
 * @module contactspanel
 */

import { handle, label } from "./names.js";
import { CallsFrom, DirectoryMode } from "./protocol.js";
import { canCallNow, lastSeenText, markInCall, saidInCall } from "./ui.js";

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const el = {
  card: $("contacts-card"),
  requestsCount: $("requests-count"),
  ringSetting: /** @type {HTMLFieldSetElement} */ ($("ring-setting")),
  ringNow: $("ring-setting-now"),
  ringDefaultLabel: $("ring-default-label"),
  dnd: /** @type {HTMLButtonElement} */ ($("dnd-indicator")),
  requestsBox: $("contact-requests-box"),
  requests: $("contact-requests"),
  contacts: $("contacts"),
  contactsEmpty: $("contacts-empty"),
  outgoingBox: $("contact-outgoing-box"),
  outgoing: $("contact-outgoing"),
  addForm: /** @type {HTMLFormElement} */ ($("contact-add-form")),
  addId: /** @type {HTMLInputElement} */ ($("contact-add-id")),
  addName: /** @type {HTMLInputElement} */ ($("contact-add-name")),
  add: /** @type {HTMLButtonElement} */ ($("contact-add")),
  addHint: $("contact-add-hint"),
  blockedBox: /** @type {HTMLDetailsElement} */ ($("blocked-box")),
  blockedCount: $("blocked-count"),
  blocked: $("blocked"),
  blockedEmpty: $("blocked-empty"),
  directoryMore: $("directory-more"),
  directoryForm: /** @type {HTMLFormElement} */ ($("directory-form")),
  directoryQ: /** @type {HTMLInputElement} */ ($("directory-q")),
  directorySearch: /** @type {HTMLButtonElement} */ ($("directory-search")),
  directoryResults: $("directory-results"),
  directoryStatus: $("directory-status"),
  directoryNext: /** @type {HTMLButtonElement} */ ($("directory-next")),
};

const ADD_HINT = el.addHint.textContent ?? "";

/** What each ring setting means, in a sentence (#ring-setting-now). */
const RING_TEXT = Object.freeze({
  [CallsFrom.EVERYONE]: "Anyone can ring you.",
  [CallsFrom.CONTACTS]: "Only your contacts can ring you; other calls are silenced and kept in Recent calls.",
  [CallsFrom.NOBODY]: "Do not disturb: no call rings. Calls are silenced and kept in Recent calls.",
});

const RING_WORDS = Object.freeze({
  [CallsFrom.EVERYONE]: "Everyone",
  [CallsFrom.CONTACTS]: "Contacts",
  [CallsFrom.NOBODY]: "Nobody",
});

/**
 * "3 min ago", "yesterday", … for a request or a block (Unix seconds), or "".
 * @param {number|null} at
 */
function agoText(at) {
  if (at === null) return "";
  return lastSeenText(at).replace(/^Last seen /, "");
}

/**
 * Text for screen readers only.
 * @param {string} text
 */
function hiddenText(text) {
  const span = document.createElement("span");
  span.className = "visually-hidden";
  span.textContent = text;
  return span;
}

/**
 * @param {string} tag
 * @param {string} [className]
 * @param {string} [text]
 */
function make(tag, className = "", text = "") {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}

/**
 * @param {string} text
 * @param {string} act the `data-act` the click handler dispatches on
 * @param {string} id the user it acts on
 * @param {string} [label] the accessible name, when the visible text needs the user's name with it
 * @param {string} [className]
 */
function actionButton(text, act, id, label = "", className = "") {
  const button = /** @type {HTMLButtonElement} */ (make("button", className, text));
  button.type = "button";
  button.dataset.act = act;
  button.dataset.user = id;
  if (label) button.setAttribute("aria-label", label);
  return button;
}

/**
 * @param {string} letter
 */
function avatar(letter) {
  const span = make("span", "avatar", letter.slice(0, 1).toUpperCase());
  span.setAttribute("aria-hidden", "true");
  span.append(make("span", "dot"));
  return span;
}

/** A handset, for call buttons (static markup). */
const PHONE_ICON =
  '<svg viewBox="0 0 24 24"><path d="M8.2 5.5c.4 0 .8.3.9.7l.7 2.6c.1.4 0 .8-.3 1l-1.2 1a9.6 9.6 0 0 0 ' +
  "4.9 4.9l1-1.2c.3-.3.7-.4 1-.3l2.6.7c.4.1.7.5.7.9V18c0 .6-.4 1-1 1A13.5 13.5 0 0 1 5 6.5c0-.6.4-1 1-1z" +
  '"/></svg>';

/**
 * @typedef {object} ContactsHandlers
 * @property {(id: string, name: string) => string|null} add
 * @property {(id: string) => string|null} accept
 * @property {(id: string) => string|null} decline
 * @property {(id: string) => string|null} remove a contact, or our request (withdraw)
 * @property {(id: string, name: string) => string|null} rename
 * @property {(id: string) => string|null} block
 * @property {(id: string) => string|null} unblock
 * @property {(callsFrom: string|null) => string|null} setCallsFrom
 * @property {(q: string) => string|null} search
 * @property {() => string|null} searchMore
 * @property {(id: string) => void} call
 * @property {(text: string, kind: "info"|"error"|"warning") => void} say
 */

/**
 * Connect the panel's controls to the app.
 * @param {ContactsHandlers} handlers
 */
export function bind(handlers) {
  const tell = (problem) => {
    if (problem) handlers.say(problem, "error");
  };
  el.addForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (el.add.disabled) return;
    const problem = handlers.add(el.addId.value.trim(), el.addName.value);
    el.addHint.textContent = problem ?? ADD_HINT;
    el.addHint.dataset.kind = problem ? "error" : "";
    if (problem) {
      el.addId.setAttribute("aria-invalid", "true");
      el.addId.focus();
    } else {
      el.addId.value = el.addName.value = "";
      el.addId.removeAttribute("aria-invalid");
    }
  });
  el.addId.addEventListener("input", () => {
    el.addId.removeAttribute("aria-invalid");
    el.addHint.textContent = ADD_HINT;
    el.addHint.dataset.kind = "";
  });
  el.ringSetting.addEventListener("change", (event) => {
    const input = /** @type {HTMLInputElement} */ (event.target);
    if (input.name === "calls-from") tell(handlers.setCallsFrom(input.value === "default" ? null : input.value));
  });
  el.dnd.addEventListener("click", () => {
    el.ringSetting.scrollIntoView?.({ block: "nearest" });
    /** @type {HTMLInputElement|null} */ (el.ringSetting.querySelector("input:checked"))?.focus();
  });
  el.directoryForm.addEventListener("submit", (event) => {
    event.preventDefault();
    tell(handlers.search(el.directoryQ.value));
  });
  el.directoryNext.addEventListener("click", () => tell(handlers.searchMore()));

  for (const list of [el.requests, el.outgoing, el.blocked, el.contacts, el.directoryResults]) {
    list.addEventListener("click", (event) => {
      const button = /** @type {HTMLButtonElement|null} */ (
        /** @type {HTMLElement} */ (event.target).closest("button[data-act]")
      );
      if (!button || button.disabled) return;
      const id = button.dataset.user ?? "";
      const li = /** @type {HTMLElement} */ (button.closest("li"));
      switch (button.dataset.act) {
        case "call":
          if (!saidInCall(button)) handlers.call(id);
          break;
        case "accept":
          tell(handlers.accept(id));
          break;
        case "decline":
          tell(handlers.decline(id));
          break;
        case "withdraw":
        case "remove":
          tell(handlers.remove(id));
          break;
        case "block":
          tell(handlers.block(id));
          break;
        case "unblock":
          tell(handlers.unblock(id));
          break;
        case "add":
          tell(handlers.add(id, ""));
          break;
        case "options":
          toggleOptions(li, button.getAttribute("aria-expanded") !== "true");
          break;
        case "rename":
          openRename(li);
          break;
        case "rename-cancel":
          closeRename(li, true);
          break;
        default:
          break;
      }
    });
  }
  el.contacts.addEventListener("submit", (event) => {
    event.preventDefault();
    const form = /** @type {HTMLFormElement} */ (event.target);
    const li = /** @type {HTMLElement} */ (form.closest("li"));
    const input = /** @type {HTMLInputElement} */ (form.querySelector("input"));
    const problem = handlers.rename(li.dataset.contact ?? "", input.value);
    if (problem) {
      input.setAttribute("aria-invalid", "true");
      handlers.say(problem, "error");
      input.focus();
    } else {
      toggleOptions(li, false, true); // renamed: back to the contact's line
    }
  });
  el.contacts.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    const li = /** @type {HTMLElement|null} */ (/** @type {HTMLElement} */ (event.target).closest("li"));
    if (!li) return;
    const form = li.querySelector("form");
    if (form && !form.hidden) closeRename(li, true);
    else if (!li.querySelector(".contact-options")?.hidden) toggleOptions(li, false, true);
    else return;
    event.preventDefault(); // not a hangup
  });
}

/**
 * Show or hide a contact's options (Rename, Remove, Block).
 * @param {HTMLElement} li
 * @param {boolean} open
 * @param {boolean} [focusToggle]
 */
function toggleOptions(li, open, focusToggle = false) {
  const toggle = /** @type {HTMLButtonElement} */ (li.querySelector('[data-act="options"]'));
  const options = /** @type {HTMLElement} */ (li.querySelector(".contact-options"));
  options.hidden = !open;
  toggle.setAttribute("aria-expanded", String(open));
  if (!open) closeRename(li, false);
  if (open) /** @type {HTMLElement} */ (options.querySelector("button"))?.focus();
  else if (focusToggle) toggle.focus();
}

/** @param {HTMLElement} li */
function openRename(li) {
  const form = /** @type {HTMLFormElement} */ (li.querySelector("form"));
  const input = /** @type {HTMLInputElement} */ (form.querySelector("input"));
  form.hidden = false;
  input.value = li.dataset.name ?? "";
  input.removeAttribute("aria-invalid");
  input.focus();
  input.select();
}

/**
 * @param {HTMLElement} li
 * @param {boolean} focusToggle
 */
function closeRename(li, focusToggle) {
  const form = li.querySelector("form");
  if (form) form.hidden = true;
  if (focusToggle) /** @type {HTMLElement|null} */ (li.querySelector('[data-act="options"]'))?.focus();
}

/**
 * Bring the panel in line with the app state.
 * @param {import("./ui.js").View} view
 */
export function render(view) {
  const contacts = view.contacts;
  const connected = view.server.state === "connected";
  const canCall = canCallNow(view);
  const supported = Boolean(contacts?.supported);
  el.card.hidden = !supported;
  el.dnd.hidden = !(supported && contacts.ringing === CallsFrom.NOBODY);
  renderDirectory(view, canCall);
  if (!contacts || !supported) return;
  const ready = connected && contacts.loaded;

  // Who may ring me
  el.ringSetting.disabled = !ready;
  el.ringSetting.dataset.ring = contacts.ringing ?? "";
  const chosen = contacts.chosen ?? "default";
  for (const input of /** @type {NodeListOf<HTMLInputElement>} */ (el.ringSetting.querySelectorAll("input"))) {
    input.checked = input.value === chosen;
  }
  const byDefault = contacts.defaultCallsFrom ? RING_WORDS[contacts.defaultCallsFrom] : null;
  setText(el.ringDefaultLabel, byDefault ? `Server default (${byDefault})` : "Server default");
  const how = (contacts.ringing && RING_TEXT[contacts.ringing]) ?? "Calls ring as this server's default says.";
  setText(el.ringNow, contacts.callsFrom === null && contacts.ringing ? `${how} (The server's default.)` : how);

  // Requests
  el.requestsCount.hidden = contacts.incoming.length === 0;
  setText(el.requestsCount, String(contacts.incoming.length));
  el.requestsCount.setAttribute(
    "aria-label",
    `${contacts.incoming.length} contact request${contacts.incoming.length === 1 ? "" : "s"}`,
  );
  el.requestsBox.hidden = contacts.incoming.length === 0;
  rebuild(el.requests, contacts.incoming, ready, requestItem);
  el.outgoingBox.hidden = contacts.outgoing.length === 0;
  rebuild(el.outgoing, contacts.outgoing, ready, outgoingItem);

  // Contacts
  renderContactList(contacts.contacts, ready, canCall);
  el.contactsEmpty.hidden = contacts.contacts.length > 0;
  setText(
    el.contactsEmpty,
    !connected
      ? "Connect to see your contacts."
      : "No contacts yet. Add someone by their exact id below; once they accept, you see when they are online.",
  );

  // Add a contact
  el.add.disabled = !ready;
  el.addId.disabled = el.addName.disabled = !ready;

  // Blocked
  setText(el.blockedCount, `(${contacts.blocked.length})`);
  el.blockedEmpty.hidden = contacts.blocked.length > 0;
  rebuild(el.blocked, contacts.blocked, ready, blockedItem);
}

/**
 * @param {HTMLElement} node
 * @param {string} text
 */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/**
 * Replace a list's items when what they show changed (requests, blocks: the user acts on one and it goes).
 * @param {HTMLElement} list
 * @param {import("./contacts.js").Dated[]} items
 * @param {boolean} ready
 * @param {(item: import("./contacts.js").Dated, ready: boolean) => HTMLLIElement} makeItem
 */
function rebuild(list, items, ready, makeItem) {
  const signature = JSON.stringify([items, ready, items.map((item) => label(item.id))]);
  if (list.dataset.signature === signature) return;
  list.dataset.signature = signature;
  const had = list.contains(document.activeElement) ? /** @type {HTMLElement} */ (document.activeElement) : null;
  const at = had ? [...list.children].findIndex((li) => li.contains(had)) : -1;
  list.replaceChildren(...items.map((item) => makeItem(item, ready)));
  if (had) keepFocus(list, had, at);
}

/**
 * The focus was in `list` (on `had`, in its item number `at`) as its items were replaced: a keyboard user acting
 * on one (accept, block, unblock) was sent back to the top of the page. Put it on the same button if it is there
 * again, else on the first button of the item now where that one was (or of the last), else on the card's heading.
 * @param {HTMLElement} list
 * @param {HTMLElement} had
 * @param {number} at
 */
function keepFocus(list, had, at) {
  const { act, user } = had.dataset;
  const button = act && user && `button[data-act="${CSS.escape(act)}"][data-user="${CSS.escape(user)}"]`;
  const same = button ? list.querySelector(button) : null;
  const items = list.children;
  const near = items.length ? items[Math.max(0, Math.min(at, items.length - 1))].querySelector("button") : null;
  const heading = list.closest("section")?.querySelector("h2") ?? null;
  const target = /** @type {HTMLElement|null} */ (same ?? near ?? heading);
  if (!target) return;
  if (target === heading) target.tabIndex = -1;
  target.focus({ preventScroll: true });
}

/**
 * @param {import("./contacts.js").Dated} request
 * @param {boolean} ready
 */
function requestItem({ id, at }, ready) {
  const li = make("li", "person request");
  li.dataset.user = id;
  const who = make("span", "who");
  who.append(...nameAndId(id), make("span", "status-text", `wants to add you${at ? ` · ${agoText(at)}` : ""}`));
  const actions = make("span", "actions");
  actions.append(
    actionButton("Accept", "accept", id, `Accept ${id}'s contact request`, "success small"),
    actionButton("Decline", "decline", id, `Decline ${id}'s contact request`, "small"),
    actionButton("Block", "block", id, `Block ${id}`, "small quiet"),
  );
  for (const b of actions.querySelectorAll("button")) /** @type {HTMLButtonElement} */ (b).disabled = !ready;
  li.append(avatar(label(id)), who, actions);
  return /** @type {HTMLLIElement} */ (li);
}

/**
 * @param {import("./contacts.js").Dated} request
 * @param {boolean} ready
 */
function outgoingItem({ id, at }, ready) {
  const li = make("li", "person request");
  li.dataset.user = id;
  const who = make("span", "who");
  who.append(...nameAndId(id), make("span", "status-text", `asked${at ? ` ${agoText(at)}` : ""}`));
  const withdraw = actionButton("Withdraw", "withdraw", id, `Withdraw your request to ${id}`, "small");
  withdraw.disabled = !ready;
  li.append(avatar(label(id)), who, withdraw);
  return /** @type {HTMLLIElement} */ (li);
}

/**
 * @param {import("./contacts.js").Dated} entry
 * @param {boolean} ready
 */
function blockedItem({ id, at }, ready) {
  const li = make("li", "person blocked-user");
  li.dataset.user = id;
  const who = make("span", "who");
  who.append(...nameAndId(id), make("span", "status-text", at ? `blocked ${agoText(at)}` : "blocked"));
  const button = actionButton("Unblock", "unblock", id, `Unblock ${id}`, "small");
  button.disabled = !ready;
  li.append(who, button);
  return /** @type {HTMLLIElement} */ (li);
}

/**
 * A person's name (their display name, as text) and, under it when it is not the id, their id.
 * @param {string} id
 * @returns {HTMLElement[]}
 */
function nameAndId(id) {
  const shown = label(id);
  return shown === id ? [make("span", "name", id)] : [make("span", "name", shown), make("span", "user-id", handle(id))];
}

/**
 * A contact's presence, as [data-status, text].
 * @param {import("./contacts.js").Contact} c
 * @returns {[string, string]}
 */
function contactStatus(c) {
  if (c.status === "online") return c.inCall ? ["in-call", "In a call"] : ["online", "Online"];
  return ["offline", lastSeenText(c.lastSeen)];
}

/**
 * The contacts, each kept across renders (so that an open options row or rename field stays as it is).
 * @param {import("./contacts.js").Contact[]} contacts in order
 * @param {boolean} ready
 * @param {boolean} canCall
 */
function renderContactList(contacts, ready, canCall) {
  const list = el.contacts;
  const existing = new Map([...list.children].map((li) => [/** @type {HTMLElement} */ (li).dataset.contact, li]));
  const ids = new Set(contacts.map((c) => c.id));
  // A contact removed (or blocked) from its own options: the focus goes on, not back to the page's top.
  const had = list.contains(document.activeElement) ? /** @type {HTMLElement} */ (document.activeElement) : null;
  const at = had ? [...list.children].findIndex((li) => li.contains(had)) : -1;
  for (const [id, li] of existing) if (!ids.has(id)) li.remove();
  contacts.forEach((c, index) => {
    let li = /** @type {HTMLElement|undefined} */ (existing.get(c.id));
    if (!li) {
      li = makeContact(c.id);
      existing.set(c.id, li);
    }
    const [status, text] = contactStatus(c);
    // The name the user gave the contact, else the contact's own display name, else the id.
    const shown = c.name ?? label(c.id);
    const named = shown !== c.id;
    li.dataset.status = status;
    li.dataset.name = c.name ?? "";
    setText(/** @type {HTMLElement} */ (li.querySelector(".name")), shown);
    const idLine = /** @type {HTMLElement} */ (li.querySelector(".user-id"));
    if (idLine.dataset.id !== (named ? c.id : "")) {
      idLine.dataset.id = named ? c.id : "";
      idLine.replaceChildren(...(named ? [handle(c.id), hiddenText(", ")] : []));
    }
    idLine.hidden = !named;
    setText(/** @type {HTMLElement} */ (li.querySelector(".avatar-letter")), shown.slice(0, 1).toUpperCase());
    setText(/** @type {HTMLElement} */ (li.querySelector(".status-text")), text);
    const call = /** @type {HTMLButtonElement} */ (li.querySelector('[data-act="call"]'));
    call.disabled = !canCall;
    markInCall(call, canCall && status === "in-call", c.id);
    const toggle = /** @type {HTMLButtonElement} */ (li.querySelector('[data-act="options"]'));
    toggle.setAttribute("aria-label", `More for ${shown}`);
    for (const b of li.querySelectorAll(".contact-options button, form button")) {
      /** @type {HTMLButtonElement} */ (b).disabled = !ready;
    }
    /** @type {HTMLInputElement} */ (li.querySelector("form input")).setAttribute(
      "aria-label",
      `Your name for ${c.id}`,
    );
    if (list.children[index] !== li) list.insertBefore(li, list.children[index] ?? null);
  });
  if (had && document.activeElement !== had) keepFocus(list, had, at); // (gone, or moved: a move drops the focus)
}

/**
 * One contact's line: a call button (avatar, name, presence), "More" (Rename, Remove, Block), and the rename field.
 * @param {string} id
 * @returns {HTMLLIElement}
 */
function makeContact(id) {
  const li = make("li", "person contact");
  li.dataset.contact = id;
  const call = actionButton("", "call", id, "", "call-user");
  call.dataset.peer = id;
  const face = avatar("");
  face.prepend(make("span", "avatar-letter"));
  const who = make("span", "who");
  const idLine = make("span", "user-id");
  who.append(hiddenText("Call "), make("span", "name"), hiddenText(", "), idLine, make("span", "status-text"));
  const action = make("span", "action");
  action.setAttribute("aria-hidden", "true");
  action.innerHTML = `${PHONE_ICON}<span>Call</span>`;
  call.append(face, who, action);

  const more = actionButton("⋯", "options", id, `More for ${id}`, "more");
  const optionsId = `contact-options-${id}`;
  more.setAttribute("aria-expanded", "false");
  more.setAttribute("aria-controls", optionsId);

  const options = make("div", "contact-options row");
  options.id = optionsId;
  options.hidden = true;
  options.append(
    actionButton("Rename", "rename", id, "", "small"),
    actionButton("Remove", "remove", id, `Remove ${id} from your contacts`, "small"),
    actionButton("Block", "block", id, `Block ${id}`, "small quiet"),
  );

  const form = /** @type {HTMLFormElement} */ (make("form", "rename-form row"));
  form.hidden = true;
  form.noValidate = true;
  const input = /** @type {HTMLInputElement} */ (make("input"));
  input.maxLength = 64;
  input.autocomplete = "off";
  input.placeholder = `Your name for ${id} (empty: “${id}”)`;
  const save = /** @type {HTMLButtonElement} */ (make("button", "primary small", "Save"));
  save.type = "submit";
  form.append(input, save, actionButton("Cancel", "rename-cancel", id, "", "small"));

  li.append(call, more, options, form);
  return /** @type {HTMLLIElement} */ (li);
}

/**
 * In the People card: the search through everyone online, offered when the server listed only some of them.
 * @param {import("./ui.js").View} view
 * @param {boolean} canCall
 */
function renderDirectory(view, canCall) {
  const contacts = view.contacts;
  const connected = view.server.state === "connected";
  const offer = Boolean(connected && contacts?.directory === DirectoryMode.ALL && (contacts.more || contacts.search));
  el.directoryMore.hidden = !offer;
  if (!offer || !contacts) return;
  const search = contacts.search;
  el.directoryResults.hidden = !search || search.users.length === 0;
  el.directoryNext.hidden = !search?.next || search.pending;
  const prefix = search?.q ? ` whose id starts with “${search.q}”` : "";
  setText(
    el.directoryStatus,
    !search
      ? ""
      : search.pending
        ? "Searching…"
        : search.users.length
          ? `${search.users.length} online${search.next ? " so far" : ""}${prefix}.`
          : `No one online${prefix}.`,
  );
  const known = new Set((contacts.contacts ?? []).map((c) => c.id));
  const items = (search?.users ?? []).map((u) => ({ ...u, contact: known.has(u.id) }));
  const signature = JSON.stringify([items, canCall, items.map((u) => label(u.id))]);
  if (el.directoryResults.dataset.signature === signature) return;
  el.directoryResults.dataset.signature = signature;
  el.directoryResults.replaceChildren(
    ...items.map((u) => {
      const li = make("li", "person found");
      li.dataset.user = u.id;
      li.dataset.status = u.inCall ? "in-call" : "online";
      const who = make("span", "who");
      who.append(...nameAndId(u.id), make("span", "status-text", u.inCall ? "In a call" : "Online"));
      const call = actionButton("Call", "call", u.id, `Call ${u.id}${u.inCall ? ", in a call" : ""}`, "small primary");
      call.disabled = !canCall;
      markInCall(call, canCall && u.inCall, u.id);
      li.append(avatar(label(u.id)), who, call);
      if (!u.contact) li.append(actionButton("Add", "add", u.id, `Add ${u.id} to your contacts`, "small"));
      return li;
    }),
  );
}
