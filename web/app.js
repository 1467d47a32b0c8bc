// Entente web client: speaks the hub client protocol v1 over a WebSocket at /api/v1/ws.
// All user-supplied text reaches the page through textContent only; no markup is ever built from it.
'use strict';

(function () {
  const TYPING_IDLE_MS = 3000;
  const MAX_MESSAGES_PER_CHAT = 1000;
  const MAX_REQUESTS = 200;
  const MAX_BLOCKED = 10000;
  const MAX_PENDING_OPS = 64;
  const SHOW_LABELS = {
    available: 'Available',
    away: 'Away',
    dnd: 'Do not disturb',
    invisible: 'Invisible',
    offline: 'Offline',
  };
  const SHOWS = new Set(['available', 'away', 'dnd', 'offline']);
  const OWN_SHOWS = new Set(['available', 'away', 'dnd', 'invisible']);
  const SUBSCRIPTIONS = new Set(['none', 'to', 'from', 'both']);
  const TYPING_STATES = new Set(['composing', 'paused', 'active']);

  const el = (id) => document.getElementById(id);
  const ui = {
    loginView: el('login-view'),
    loginForm: el('login-form'),
    loginUser: el('login-user'),
    loginPassword: el('login-password'),
    loginSubmit: el('login-submit'),
    registerSubmit: el('register-submit'),
    loginMessage: el('login-message'),
    appView: el('app-view'),
    meDot: el('me-dot'),
    meAddress: el('me-address'),
    connState: el('conn-state'),
    reconnect: el('reconnect'),
    signOut: el('sign-out'),
    errorBanner: el('error-banner'),
    errorBannerText: el('error-banner-text'),
    errorBannerClose: el('error-banner-close'),
    notice: el('notice'),
    noticeText: el('notice-text'),
    noticeClose: el('notice-close'),
    presenceForm: el('presence-form'),
    myShow: el('my-show'),
    myStatus: el('my-status'),
    addForm: el('add-contact-form'),
    addInput: el('add-contact-input'),
    openChat: el('open-chat'),
    requestsPanel: el('requests-panel'),
    requests: el('requests'),
    contacts: el('contacts'),
    contactsEmpty: el('contacts-empty'),
    chatTabs: el('chat-tabs'),
    chatPanes: el('chat-panes'),
    chatsEmpty: el('chats-empty'),
    blockedPanel: el('blocked-panel'),
    blockedList: el('blocked-list'),
    contactTemplate: el('contact-template'),
    requestTemplate: el('request-template'),
    blockedTemplate: el('blocked-template'),
    paneTemplate: el('pane-template'),
    messageTemplate: el('message-template'),
  };

  const state = {
    ws: null,
    creds: null, // { user, password } kept in memory only, for the reconnect button
    welcomed: false, // the current socket has received `welcome`
    address: null,
    domain: null,
    roster: new Map(), // address -> { subscription, pending }
    presence: new Map(), // address -> { show, status }
    declined: new Set(), // addresses that answered our request with `unsubscribed`
    asked: new Set(), // addresses we asked to see, with no answer seen yet
    requests: new Map(), // address -> true, in arrival order
    blocked: new Set(), // addresses on the user's block list, as the server last reported it
    blocking: true, // the server offers block lists (protocol extension)
    blocklistQuery: null, // id of the `blocklist` request sent after welcome
    pendingOps: new Map(), // id of a block/unblock frame -> what it was, for its error
    chats: new Map(), // address -> Chat
    active: null, // address of the visible chat
    outbox: new Map(), // client message id -> { chat, item }
    nextId: 1,
    nextPane: 1,
    myShow: 'available',
    myStatus: '',
  };

  // ---------- helpers ----------

  function isObject(v) {
    return v !== null && typeof v === 'object' && !Array.isArray(v);
  }

  function str(v) {
    return typeof v === 'string' ? v : null;
  }

  function splitAddress(address) {
    const at = address.lastIndexOf('@');
    if (at < 0) return { local: address, domain: '' };
    return { local: address.slice(0, at), domain: address.slice(at + 1) };
  }

  // Hub users are shown by their screen name, everyone else by the full address.
  function displayName(address) {
    const { local, domain } = splitAddress(address);
    if (state.domain && domain === state.domain && local) return local;
    return address;
  }

  // Turns what a person typed into an address the server will recognise.
  function normalizeInput(text) {
    let t = text.trim().replace(/^(sips?|xmpp):/i, '');
    if (!t) return null;
    if (!t.includes('@')) {
      if (!state.domain) return null;
      t = t + '@' + state.domain;
    }
    const { local, domain } = splitAddress(t);
    if (!local || !domain) return null;
    const d = domain.toLowerCase().replace(/\.$/, '');
    if (d === state.domain) return local.replace(/ /g, '').toLowerCase() + '@' + d;
    return local + '@' + d;
  }

  function send(frame) {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !state.welcomed) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  function showError(text) {
    ui.errorBannerText.textContent = text;
    ui.errorBanner.hidden = false;
  }

  function showNotice(text) {
    ui.noticeText.textContent = text;
    ui.notice.hidden = false;
  }

  function describeError(frame) {
    const code = str(frame.code) || 'error';
    const text = str(frame.text);
    return text ? code + ': ' + text : code;
  }

  function formatTime(date) {
    return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  function setConnState(kind, text) {
    ui.connState.dataset.state = kind;
    ui.connState.textContent = text;
  }

  function updateTitle() {
    let unread = 0;
    for (const chat of state.chats.values()) unread += chat.unread;
    const base = state.address ? 'Entente — ' + state.address : 'Entente';
    document.title = unread > 0 ? '(' + unread + ') ' + base : base;
  }

  // ---------- connection ----------

  function wsUrl() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return scheme + '//' + location.host + '/api/v1/ws';
  }

  function connect() {
    if (state.ws) {
      state.ws.onclose = null;
      state.ws.close();
    }
    state.welcomed = false;
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch (e) {
      onConnectFailed('Could not open a connection to the server.');
      return;
    }
    state.ws = ws;
    let loginError = null;
    setConnState('connecting', 'Connecting…');
    ui.reconnect.hidden = true;

    ws.onopen = () => {
      ws.send(JSON.stringify({ type: 'login', user: state.creds.user, password: state.creds.password }));
    };
    ws.onmessage = (ev) => {
      if (ws !== state.ws || typeof ev.data !== 'string') return;
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (!isObject(frame) || typeof frame.type !== 'string') return;
      if (!state.welcomed) {
        if (frame.type === 'welcome') onWelcome(frame);
        else if (frame.type === 'error') loginError = describeError(frame);
        return;
      }
      handleFrame(frame);
    };
    ws.onclose = () => {
      if (ws !== state.ws) return;
      state.ws = null;
      if (state.welcomed) {
        state.welcomed = false;
        onDisconnected();
      } else {
        onConnectFailed(loginError ? 'Sign-in failed: ' + loginError : 'Could not connect to the server.');
      }
    };
  }

  function onConnectFailed(text) {
    state.ws = null;
    if (state.address) {
      // A reconnect attempt from the main view failed.
      setConnState('closed', 'Disconnected');
      ui.reconnect.hidden = false;
      showError(text);
    } else {
      setBusy(false);
      ui.loginMessage.textContent = text;
      ui.loginMessage.dataset.kind = 'error';
    }
  }

  function onWelcome(frame) {
    const address = str(frame.address);
    if (!address) return;
    if (state.address && state.address !== address) resetSession();
    state.welcomed = true;
    state.address = address;
    state.domain = splitAddress(address).domain;
    state.presence.clear();
    ui.meAddress.textContent = address;
    ui.loginPassword.value = '';
    ui.loginMessage.textContent = '';
    ui.loginView.hidden = true;
    ui.appView.hidden = false;
    ui.errorBanner.hidden = true;
    setBusy(false);
    setConnState('open', 'Connected');
    ui.reconnect.hidden = true;
    updateMe();
    send({ type: 'presence', show: state.myShow, status: state.myStatus });
    if (state.blocking) {
      state.blocklistQuery = 'q' + state.nextId++;
      send({ type: 'blocklist', id: state.blocklistQuery });
    }
    renderContacts();
    renderRequests();
    renderBlocked();
    for (const chat of state.chats.values()) renderChatHead(chat);
    updateTitle();
  }

  function onDisconnected() {
    setConnState('closed', 'Disconnected');
    ui.reconnect.hidden = false;
    state.presence.clear();
    for (const [id, entry] of state.outbox) {
      markFailed(entry.item, 'connection lost before the server confirmed this message');
      state.outbox.delete(id);
    }
    state.pendingOps.clear();
    state.blocklistQuery = null;
    for (const chat of state.chats.values()) {
      setTypingIndicator(chat, 'active');
      stopOwnTyping(chat, false);
      renderChatHead(chat);
    }
    updateMe();
    renderContacts();
  }

  function resetSession() {
    state.address = null;
    state.domain = null;
    state.roster.clear();
    state.presence.clear();
    state.declined.clear();
    state.asked.clear();
    state.requests.clear();
    state.outbox.clear();
    state.blocked.clear();
    state.blocking = true;
    state.blocklistQuery = null;
    state.pendingOps.clear();
    ui.appView.dataset.blocking = 'on';
    for (const chat of state.chats.values()) {
      clearTimeout(chat.typingTimer);
      chat.tab.remove();
      chat.pane.remove();
    }
    state.chats.clear();
    state.active = null;
    ui.chatsEmpty.hidden = false;
    renderContacts();
    renderRequests();
    renderBlocked();
  }

  function signOut() {
    const ws = state.ws;
    state.ws = null;
    state.welcomed = false;
    if (ws) {
      ws.onclose = null;
      ws.close(1000);
    }
    state.creds = null;
    resetSession();
    ui.appView.hidden = true;
    ui.loginView.hidden = false;
    ui.errorBanner.hidden = true;
    ui.notice.hidden = true;
    ui.loginMessage.textContent = '';
    setConnState('closed', '');
    updateTitle();
    ui.loginUser.focus();
  }

  // ---------- incoming frames ----------

  function handleFrame(frame) {
    switch (frame.type) {
      case 'roster':
        return onRoster(frame);
      case 'presence':
        return onPresence(frame);
      case 'message':
        return onMessage(frame);
      case 'ack':
        return onAck(frame);
      case 'error':
        return onError(frame);
      case 'subscription_request':
        return onSubscriptionRequest(frame);
      case 'subscribed':
        return onSubscribed(frame);
      case 'unsubscribed':
        return onUnsubscribed(frame);
      case 'typing':
        return onTyping(frame);
      case 'blocklist':
        return onBlocklist(frame);
      default:
        return undefined; // newer frame types are ignored
    }
  }

  function onRoster(frame) {
    if (!Array.isArray(frame.items)) return;
    const next = new Map();
    for (const item of frame.items) {
      if (!isObject(item)) continue;
      const address = str(item.address);
      if (!address) continue;
      const subscription = SUBSCRIPTIONS.has(item.subscription) ? item.subscription : 'none';
      const pending = item.pending === true;
      next.set(address, { subscription, pending });
      if (pending) state.asked.add(address);
      else if (subscription === 'to' || subscription === 'both') state.asked.delete(address);
    }
    state.roster = next;
    renderContacts();
    for (const chat of state.chats.values()) renderChatHead(chat);
  }

  function onPresence(frame) {
    const from = str(frame.from);
    if (!from || from === state.address) return;
    const show = SHOWS.has(frame.show) ? frame.show : 'available';
    const status = str(frame.status) || '';
    if (show === 'offline') state.presence.delete(from);
    else state.presence.set(from, { show, status });
    renderContacts();
    const chat = state.chats.get(from);
    if (chat) {
      if (show === 'offline') setTypingIndicator(chat, 'active');
      renderChatHead(chat);
    }
  }

  function onMessage(frame) {
    const from = str(frame.from);
    const body = str(frame.body);
    if (!from || body === null) return;
    let when = new Date();
    const ts = str(frame.ts);
    if (ts) {
      const parsed = new Date(ts);
      if (!Number.isNaN(parsed.getTime())) when = parsed;
    }
    const chat = ensureChat(from);
    appendMessage(chat, {
      direction: 'in',
      from,
      body,
      when,
      offline: frame.offline === true,
      state: 'received',
    });
    setTypingIndicator(chat, 'active');
    if (!state.active) activateChat(from, false);
    else if (state.active !== from || document.hidden) {
      chat.unread += 1;
      renderTab(chat);
    }
    updateTitle();
  }

  function onAck(frame) {
    const id = str(frame.id);
    const entry = id && state.outbox.get(id);
    if (!entry) return;
    state.outbox.delete(id);
    entry.item.dataset.state = 'sent';
    entry.item.querySelector('[data-testid="chat-message-flag"]').textContent = '';
  }

  function onError(frame) {
    const id = str(frame.id);
    const entry = id && state.outbox.get(id);
    if (entry) {
      state.outbox.delete(id);
      markFailed(entry.item, str(frame.text) || str(frame.code) || 'error', str(frame.code));
      return;
    }
    if (id && id === state.blocklistQuery) {
      // A server without block lists: hide the controls instead of reporting an error.
      state.blocklistQuery = null;
      if (frame.code === 'bad_request') {
        state.blocking = false;
        ui.appView.dataset.blocking = 'off';
        return;
      }
    }
    const op = id && state.pendingOps.get(id);
    if (op) {
      state.pendingOps.delete(id);
      showError(op + ' failed: ' + describeError(frame));
      return;
    }
    showError(describeError(frame));
  }

  function onSubscriptionRequest(frame) {
    const from = str(frame.from);
    if (!from || state.blocked.has(from)) return;
    if (!state.requests.has(from) && state.requests.size >= MAX_REQUESTS) return;
    state.requests.set(from, true);
    renderRequests();
  }

  function onSubscribed(frame) {
    const from = str(frame.from);
    if (!from) return;
    const item = state.roster.get(from) || { subscription: 'none', pending: false };
    if (item.subscription === 'none') item.subscription = 'to';
    else if (item.subscription === 'from') item.subscription = 'both';
    item.pending = false;
    state.roster.set(from, item);
    state.declined.delete(from);
    state.asked.delete(from);
    renderContacts();
    send({ type: 'roster' });
  }

  function onUnsubscribed(frame) {
    const from = str(frame.from);
    if (!from) return;
    const item = state.roster.get(from);
    if (state.asked.delete(from)) {
      showNotice(displayName(from) + ' declined your contact request.');
      if (item) state.declined.add(from);
    } else if (item && (item.subscription === 'to' || item.subscription === 'both')) {
      showNotice(displayName(from) + ' no longer shares presence with you.');
    }
    if (item) {
      if (item.subscription === 'both') item.subscription = 'from';
      else if (item.subscription === 'to') item.subscription = 'none';
      item.pending = false;
    }
    state.presence.delete(from);
    if (state.requests.delete(from)) renderRequests();
    renderContacts();
    const chat = state.chats.get(from);
    if (chat) renderChatHead(chat);
    send({ type: 'roster' });
  }

  function onTyping(frame) {
    const from = str(frame.from);
    if (!from || !TYPING_STATES.has(frame.state)) return;
    if (state.blocked.has(from)) return;
    const chat = state.chats.get(from);
    if (chat) setTypingIndicator(chat, frame.state);
  }

  // The whole list, sent after every change (to every session of the user) and when asked.
  function onBlocklist(frame) {
    if (!Array.isArray(frame.items)) return;
    state.blocklistQuery = null;
    state.pendingOps.clear();
    const next = new Set();
    for (const item of frame.items) {
      const address = str(item);
      if (address && next.size < MAX_BLOCKED) next.add(address);
    }
    let requestsChanged = false;
    for (const address of next) {
      if (state.blocked.has(address)) continue;
      // Newly blocked: its presence and typing no longer reach us, so what we knew is stale.
      state.presence.delete(address);
      if (state.requests.delete(address)) requestsChanged = true;
      const chat = state.chats.get(address);
      if (chat) setTypingIndicator(chat, 'active');
    }
    state.blocked = next;
    renderContacts();
    renderBlocked();
    if (requestsChanged) renderRequests();
    for (const chat of state.chats.values()) {
      renderTab(chat);
      renderChatHead(chat);
    }
  }

  // ---------- contacts and requests ----------

  function visiblePresence(address) {
    if (state.blocked.has(address)) return null;
    const item = state.roster.get(address);
    if (!item || (item.subscription !== 'to' && item.subscription !== 'both')) return null;
    return state.presence.get(address) || { show: 'offline', status: '' };
  }

  function contactNote(address) {
    if (state.blocked.has(address)) return 'Blocked';
    const item = state.roster.get(address);
    if (!item) return '';
    if (item.pending) return 'Awaiting approval';
    if (state.declined.has(address)) return 'Request declined';
    if (item.subscription === 'none' || item.subscription === 'from') return 'Presence not shared';
    return '';
  }

  const SHOW_ORDER = { available: 0, away: 1, dnd: 2, offline: 3 };

  function renderContacts() {
    const entries = [...state.roster.keys()].map((address) => {
      const p = visiblePresence(address);
      return { address, p, rank: p ? SHOW_ORDER[p.show] : state.blocked.has(address) ? 5 : 4 };
    });
    entries.sort((a, b) => a.rank - b.rank || displayName(a.address).localeCompare(displayName(b.address)));
    const frag = document.createDocumentFragment();
    for (const { address, p } of entries) {
      const li = ui.contactTemplate.content.firstElementChild.cloneNode(true);
      li.dataset.address = address;
      li.dataset.subscription = state.roster.get(address).subscription;
      li.dataset.show = p ? p.show : 'unknown';
      const blocked = state.blocked.has(address);
      li.dataset.blocked = blocked ? 'true' : 'false';
      li.querySelector('.dot').dataset.show = p ? p.show : 'unknown';
      const name = li.querySelector('[data-testid="contact-name"]');
      name.textContent = displayName(address);
      name.title = address;
      li.querySelector('[data-testid="contact-show"]').textContent = p ? SHOW_LABELS[p.show] : '';
      li.querySelector('[data-testid="contact-status"]').textContent = p ? p.status : '';
      li.querySelector('[data-testid="contact-note"]').textContent = contactNote(address);
      const open = li.querySelector('[data-testid="contact-open"]');
      let label = 'Chat with ' + address;
      if (p) label += ', ' + SHOW_LABELS[p.show] + (p.status ? ': ' + p.status : '');
      const note = contactNote(address);
      if (note) label += ', ' + note;
      open.setAttribute('aria-label', label);
      open.addEventListener('click', () => activateChat(address, true));
      const block = li.querySelector('[data-testid="contact-block"]');
      block.textContent = blocked ? 'Unblock' : 'Block';
      block.setAttribute('aria-label', (blocked ? 'Unblock ' : 'Block ') + address);
      block.addEventListener('click', () => (blocked ? unblockAddress(address) : blockAddress(address)));
      const remove = li.querySelector('[data-testid="contact-remove"]');
      remove.setAttribute('aria-label', 'Remove ' + address);
      remove.addEventListener('click', () => removeContact(address));
      frag.appendChild(li);
    }
    ui.contacts.replaceChildren(frag);
    ui.contactsEmpty.hidden = entries.length > 0;
  }

  function renderRequests() {
    const frag = document.createDocumentFragment();
    for (const address of state.requests.keys()) {
      const li = ui.requestTemplate.content.firstElementChild.cloneNode(true);
      li.dataset.address = address;
      li.querySelector('[data-testid="request-from"]').textContent = address;
      const approve = li.querySelector('[data-testid="request-approve"]');
      const deny = li.querySelector('[data-testid="request-deny"]');
      const block = li.querySelector('[data-testid="request-block"]');
      approve.setAttribute('aria-label', 'Approve ' + address);
      deny.setAttribute('aria-label', 'Deny ' + address);
      block.setAttribute('aria-label', 'Deny and block ' + address);
      approve.addEventListener('click', () => answerRequest(address, true));
      deny.addEventListener('click', () => answerRequest(address, false));
      block.addEventListener('click', () => {
        answerRequest(address, false);
        blockAddress(address);
      });
      frag.appendChild(li);
    }
    ui.requests.replaceChildren(frag);
    ui.requestsPanel.hidden = state.requests.size === 0;
  }

  function answerRequest(address, approve) {
    if (!send({ type: approve ? 'approve' : 'deny', to: address })) return;
    state.requests.delete(address);
    if (approve) {
      const item = state.roster.get(address) || { subscription: 'none', pending: false };
      if (item.subscription === 'none') item.subscription = 'from';
      else if (item.subscription === 'to') item.subscription = 'both';
      state.roster.set(address, item);
      renderContacts();
      send({ type: 'roster' });
    }
    renderRequests();
  }

  function renderBlocked() {
    const frag = document.createDocumentFragment();
    const addresses = [...state.blocked].sort((a, b) => a.localeCompare(b));
    for (const address of addresses) {
      const li = ui.blockedTemplate.content.firstElementChild.cloneNode(true);
      li.dataset.address = address;
      const text = li.querySelector('[data-testid="blocked-address"]');
      text.textContent = address;
      text.title = address;
      const unblock = li.querySelector('[data-testid="blocked-unblock"]');
      unblock.setAttribute('aria-label', 'Unblock ' + address);
      unblock.addEventListener('click', () => unblockAddress(address));
      frag.appendChild(li);
    }
    ui.blockedList.replaceChildren(frag);
    ui.blockedPanel.hidden = addresses.length === 0;
  }

  // The list changes when the server sends it back (`blocklist`), for this and every other
  // session of the user.
  function sendBlockOp(type, address, what) {
    const id = 'b' + state.nextId++;
    if (!send({ type, id, address })) {
      showError('Not connected: ' + what + ' was not sent.');
      return;
    }
    state.pendingOps.set(id, what);
    while (state.pendingOps.size > MAX_PENDING_OPS) {
      state.pendingOps.delete(state.pendingOps.keys().next().value);
    }
  }

  function blockAddress(address) {
    if (address === state.address) {
      showError('You cannot block yourself.');
      return;
    }
    sendBlockOp('block', address, 'Blocking ' + address);
  }

  function unblockAddress(address) {
    sendBlockOp('unblock', address, 'Unblocking ' + address);
  }

  function addContact(address) {
    if (address === state.address) {
      showError('You cannot add yourself.');
      return;
    }
    if (!send({ type: 'subscribe', to: address })) return;
    const item = state.roster.get(address) || { subscription: 'none', pending: false };
    if (item.subscription === 'none' || item.subscription === 'from') {
      item.pending = true;
      state.asked.add(address);
    }
    state.roster.set(address, item);
    state.declined.delete(address);
    renderContacts();
    send({ type: 'roster' });
  }

  function removeContact(address) {
    if (!send({ type: 'unsubscribe', to: address })) return;
    state.roster.delete(address);
    state.presence.delete(address);
    state.declined.delete(address);
    state.asked.delete(address);
    renderContacts();
    const chat = state.chats.get(address);
    if (chat) renderChatHead(chat);
    send({ type: 'roster' });
  }

  // ---------- own presence ----------

  function updateMe() {
    const show = state.welcomed ? state.myShow : 'offline';
    ui.meDot.dataset.show = show;
    ui.meDot.title = SHOW_LABELS[show];
  }

  function setOwnPresence() {
    const show = OWN_SHOWS.has(ui.myShow.value) ? ui.myShow.value : 'available';
    state.myShow = show;
    state.myStatus = ui.myStatus.value.trim();
    send({ type: 'presence', show, status: state.myStatus });
    updateMe();
  }

  // ---------- chats ----------

  function ensureChat(address) {
    let chat = state.chats.get(address);
    if (chat) return chat;
    const n = state.nextPane++;
    const pane = ui.paneTemplate.content.firstElementChild.cloneNode(true);
    pane.id = 'chat-pane-' + n;
    pane.dataset.address = address;
    const tab = document.createElement('button');
    tab.type = 'button';
    tab.className = 'chat-tab';
    tab.id = 'chat-tab-' + n;
    tab.dataset.testid = 'chat-tab';
    tab.dataset.address = address;
    tab.setAttribute('role', 'tab');
    tab.setAttribute('aria-controls', pane.id);
    tab.setAttribute('aria-selected', 'false');
    tab.tabIndex = -1;
    const tabName = document.createElement('span');
    tabName.className = 'chat-tab-name';
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.dataset.testid = 'chat-tab-unread';
    tab.append(tabName, badge);
    pane.setAttribute('aria-labelledby', tab.id);

    chat = {
      address,
      pane,
      tab,
      tabName,
      badge,
      log: pane.querySelector('[data-testid="chat-log"]'),
      indicator: pane.querySelector('[data-testid="typing-indicator"]'),
      input: pane.querySelector('[data-testid="chat-input"]'),
      unread: 0,
      ownTyping: 'active',
      typingTimer: null,
    };
    tab.addEventListener('click', () => activateChat(address, true));
    tab.addEventListener('keydown', (ev) => onTabKey(ev, address));
    pane.querySelector('[data-testid="chat-close"]').addEventListener('click', () => closeChat(address));
    pane.querySelector('[data-testid="chat-block"]').addEventListener('click', () => {
      if (state.blocked.has(address)) unblockAddress(address);
      else blockAddress(address);
    });
    pane.querySelector('[data-testid="composer"]').addEventListener('submit', (ev) => {
      ev.preventDefault();
      sendMessage(chat);
    });
    chat.input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        sendMessage(chat);
      }
    });
    chat.input.addEventListener('input', () => onOwnInput(chat));
    chat.input.setAttribute('aria-label', 'Message to ' + address);

    state.chats.set(address, chat);
    ui.chatTabs.appendChild(tab);
    ui.chatPanes.appendChild(pane);
    ui.chatsEmpty.hidden = true;
    renderTab(chat);
    renderChatHead(chat);
    return chat;
  }

  function renderTab(chat) {
    chat.tabName.textContent = displayName(chat.address);
    chat.tab.title = chat.address;
    chat.badge.textContent = chat.unread > 0 ? String(chat.unread) : '';
    chat.badge.hidden = chat.unread === 0;
    if (chat.unread > 0) chat.badge.setAttribute('aria-label', chat.unread + ' unread');
  }

  function renderChatHead(chat) {
    const p = visiblePresence(chat.address);
    const show = state.welcomed && p ? p.show : state.welcomed ? 'unknown' : 'offline';
    const blocked = state.blocked.has(chat.address);
    chat.pane.querySelector('.dot').dataset.show = show;
    chat.tab.dataset.show = show;
    chat.tab.dataset.blocked = blocked ? 'true' : 'false';
    chat.pane.dataset.blocked = blocked ? 'true' : 'false';
    const title = chat.pane.querySelector('[data-testid="chat-title"]');
    title.textContent = displayName(chat.address);
    title.title = chat.address;
    const presence = chat.pane.querySelector('[data-testid="chat-presence"]');
    presence.dataset.show = show;
    presence.dataset.blocked = blocked ? 'true' : 'false';
    if (blocked) presence.textContent = 'Blocked';
    else if (p) presence.textContent = SHOW_LABELS[p.show] + (p.status ? ' — ' + p.status : '');
    else presence.textContent = '';
    const block = chat.pane.querySelector('[data-testid="chat-block"]');
    block.textContent = blocked ? 'Unblock' : 'Block';
    block.setAttribute('aria-label', (blocked ? 'Unblock ' : 'Block ') + chat.address);
    const note = chat.pane.querySelector('[data-testid="chat-blocked"]');
    note.hidden = !blocked;
    note.textContent = blocked
      ? 'You blocked ' + chat.address + '. Their messages do not reach you, they see you offline, ' +
        'and the server refuses what you send them until you unblock them.'
      : '';
  }

  function activateChat(address, focus) {
    const chat = ensureChat(address);
    state.active = address;
    for (const c of state.chats.values()) {
      const on = c === chat;
      c.pane.hidden = !on;
      c.tab.setAttribute('aria-selected', on ? 'true' : 'false');
      c.tab.tabIndex = on ? 0 : -1;
    }
    chat.unread = 0;
    renderTab(chat);
    updateTitle();
    chat.log.scrollTop = chat.log.scrollHeight;
    if (focus) chat.input.focus();
  }

  function closeChat(address) {
    const chat = state.chats.get(address);
    if (!chat) return;
    stopOwnTyping(chat, true);
    chat.tab.remove();
    chat.pane.remove();
    state.chats.delete(address);
    for (const [id, entry] of state.outbox) if (entry.chat === chat) state.outbox.delete(id);
    if (state.active === address) {
      state.active = null;
      const next = state.chats.keys().next();
      if (!next.done) activateChat(next.value, false);
    }
    ui.chatsEmpty.hidden = state.chats.size > 0;
    updateTitle();
  }

  function onTabKey(ev, address) {
    const keys = [...state.chats.keys()];
    const i = keys.indexOf(address);
    let j = -1;
    if (ev.key === 'ArrowRight') j = (i + 1) % keys.length;
    else if (ev.key === 'ArrowLeft') j = (i - 1 + keys.length) % keys.length;
    else if (ev.key === 'Home') j = 0;
    else if (ev.key === 'End') j = keys.length - 1;
    if (j < 0) return;
    ev.preventDefault();
    activateChat(keys[j], false);
    state.chats.get(keys[j]).tab.focus();
  }

  function appendMessage(chat, m) {
    const li = ui.messageTemplate.content.firstElementChild.cloneNode(true);
    li.dataset.direction = m.direction;
    li.dataset.offline = m.offline ? 'true' : 'false';
    li.dataset.state = m.state;
    li.querySelector('[data-testid="chat-message-from"]').textContent =
      m.direction === 'out' ? 'me' : displayName(m.from);
    const time = li.querySelector('[data-testid="chat-message-time"]');
    time.dateTime = m.when.toISOString();
    time.textContent = formatTime(m.when);
    time.title = m.when.toLocaleString();
    li.querySelector('[data-testid="chat-message-flag"]').textContent = m.offline
      ? 'offline message'
      : m.state === 'pending'
        ? 'sending…'
        : '';
    li.querySelector('[data-testid="chat-message-body"]').textContent = m.body;
    const nearBottom = chat.log.scrollHeight - chat.log.scrollTop - chat.log.clientHeight < 40;
    chat.log.appendChild(li);
    while (chat.log.childElementCount > MAX_MESSAGES_PER_CHAT) chat.log.firstElementChild.remove();
    if (nearBottom || m.direction === 'out') chat.log.scrollTop = chat.log.scrollHeight;
    return li;
  }

  function markFailed(item, text, code) {
    item.dataset.state = 'failed';
    if (code) item.dataset.errorCode = code;
    item.querySelector('[data-testid="chat-message-flag"]').textContent = 'not delivered';
    item.querySelector('[data-testid="chat-message-error"]').textContent =
      'Not delivered: ' + text + (code && code !== text ? ' (' + code + ')' : '');
  }

  function sendMessage(chat) {
    const body = chat.input.value;
    if (!body.trim()) return;
    if (!state.welcomed) {
      showError('Not connected: the message was not sent.');
      return;
    }
    const id = 'c' + state.nextId++;
    send({ type: 'message', id, to: chat.address, body });
    const item = appendMessage(chat, {
      direction: 'out',
      from: state.address,
      body,
      when: new Date(),
      offline: false,
      state: 'pending',
    });
    item.dataset.id = id;
    state.outbox.set(id, { chat, item });
    chat.input.value = '';
    stopOwnTyping(chat, true);
  }

  // ---------- typing notifications ----------

  function typingAllowed(chat) {
    return state.roster.has(chat.address) && !state.blocked.has(chat.address);
  }

  function sendOwnTyping(chat, typingState) {
    if (chat.ownTyping === typingState) return;
    chat.ownTyping = typingState;
    if (typingAllowed(chat)) send({ type: 'typing', to: chat.address, state: typingState });
  }

  function onOwnInput(chat) {
    clearTimeout(chat.typingTimer);
    chat.typingTimer = null;
    if (!chat.input.value) {
      sendOwnTyping(chat, 'active');
      return;
    }
    sendOwnTyping(chat, 'composing');
    chat.typingTimer = setTimeout(() => {
      chat.typingTimer = null;
      sendOwnTyping(chat, 'paused');
    }, TYPING_IDLE_MS);
  }

  // Called when a message is sent or the chat closes: back to `active` without a notification
  // when nothing was announced.
  function stopOwnTyping(chat, notify) {
    clearTimeout(chat.typingTimer);
    chat.typingTimer = null;
    if (notify) sendOwnTyping(chat, 'active');
    else chat.ownTyping = 'active';
  }

  function setTypingIndicator(chat, typingState) {
    chat.indicator.dataset.state = typingState;
    chat.indicator.textContent =
      typingState === 'composing' ? displayName(chat.address) + ' is typing…' : '';
  }

  // ---------- login and registration ----------

  function setBusy(busy) {
    ui.loginSubmit.disabled = busy;
    ui.registerSubmit.disabled = busy;
  }

  function readCredentials() {
    const user = ui.loginUser.value.trim();
    const password = ui.loginPassword.value;
    if (!user || !password) {
      ui.loginMessage.textContent = 'Enter a screen name and a password.';
      ui.loginMessage.dataset.kind = 'error';
      return null;
    }
    return { user, password };
  }

  function signIn(creds) {
    state.creds = creds;
    ui.loginMessage.textContent = 'Signing in…';
    ui.loginMessage.dataset.kind = 'info';
    setBusy(true);
    connect();
  }

  async function register() {
    const creds = readCredentials();
    if (!creds) return;
    setBusy(true);
    ui.loginMessage.textContent = 'Creating the account…';
    ui.loginMessage.dataset.kind = 'info';
    let response;
    try {
      response = await fetch('/api/v1/register', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user: creds.user, password: creds.password }),
        credentials: 'same-origin',
      });
    } catch (e) {
      setBusy(false);
      ui.loginMessage.textContent = 'Could not reach the server.';
      ui.loginMessage.dataset.kind = 'error';
      return;
    }
    if (response.status === 201) {
      signIn(creds);
      return;
    }
    let detail = '';
    try {
      const body = await response.json();
      if (isObject(body) && typeof body.error === 'string') detail = body.error;
    } catch (e) {
      // no JSON body
    }
    setBusy(false);
    ui.loginMessage.dataset.kind = 'error';
    if (response.status === 409) ui.loginMessage.textContent = 'That name is already taken.';
    else if (response.status === 403) ui.loginMessage.textContent = 'This server does not allow new accounts.';
    else if (response.status === 400) ui.loginMessage.textContent = 'Not accepted: ' + (detail || 'invalid name or password');
    else ui.loginMessage.textContent = 'Registration failed (HTTP ' + response.status + ')' + (detail ? ': ' + detail : '');
  }

  // ---------- wiring ----------

  ui.loginForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const creds = readCredentials();
    if (creds) signIn(creds);
  });
  ui.registerSubmit.addEventListener('click', () => {
    register();
  });
  ui.reconnect.addEventListener('click', () => {
    if (state.creds) connect();
  });
  ui.signOut.addEventListener('click', signOut);
  ui.errorBannerClose.addEventListener('click', () => {
    ui.errorBanner.hidden = true;
  });
  ui.noticeClose.addEventListener('click', () => {
    ui.notice.hidden = true;
  });
  ui.presenceForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    setOwnPresence();
  });
  ui.myShow.addEventListener('change', setOwnPresence);
  ui.addForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const address = normalizeInput(ui.addInput.value);
    if (!address) {
      showError('Enter a screen name or an address such as user@example.com.');
      return;
    }
    addContact(address);
    ui.addInput.value = '';
  });
  ui.openChat.addEventListener('click', () => {
    const address = normalizeInput(ui.addInput.value);
    if (!address) {
      showError('Enter a screen name or an address such as user@example.com.');
      return;
    }
    ui.addInput.value = '';
    activateChat(address, true);
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && state.active) {
      const chat = state.chats.get(state.active);
      if (chat) {
        chat.unread = 0;
        renderTab(chat);
        updateTitle();
      }
    }
  });

  ui.loginUser.focus();
})();
