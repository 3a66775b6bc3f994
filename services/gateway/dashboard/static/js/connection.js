// A Status API client (SPEC 2.1): `init`, then refreshes by rule 8; after a drop, reconnect with
// backoff (1 s doubling to 30 s, full jitter) and `init` with `since` and `epoch` (rule 15).
// No reconnect after 4401 (a bad key); at least 60 s after 1008 (rate limited) (rule 4).
// A browser cannot see the gateway's pings, so once live the page sends the keepalive `refresh`
// every 25 s whatever else happens, and takes 10 s without any message after it for a dead
// connection: it drops it and reconnects as after a close (SPEC 5.1 rule 6).

import { classify } from "./state.js";

const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 30_000;
const RATE_LIMITED_WAIT_MS = 60_000;
const CLOSE_UNAUTHORIZED = 4401;
const CLOSE_RATE_LIMITED = 1008;
const KEEPALIVE_MS = 25_000; // SPEC 5.1 rule 6: a `refresh` at least every 30 s
const KEEPALIVE_REPLY_MS = 10_000; // ... and 10 s without its reply is a dead connection

/** The gateway's websocket URL, next to the page (works behind a path prefix too). */
export function websocketUrl(location) {
  const url = new URL("ws", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.hash = "";
  url.search = "";
  return url.href;
}

export class StatusClient {
  /**
   * `state` is a BotState; `handlers`: onState(name, detail), onInit(), onRefresh(changes),
   * onError(code, message).
   */
  constructor(url, apiKey, state, handlers) {
    this.url = url;
    this.apiKey = apiKey;
    this.state = state;
    this.handlers = handlers;
    this.socket = null;
    this.awaitingReply = false;
    this.failures = 0; // closes since the last successful init or resume
    this.timer = null;
    this.keepaliveTimer = null; // the next keepalive `refresh` of this.socket
    this.replyTimer = null; // armed while a keepalive waits for its reply
    this.stopped = false;
    this.lastError = null;
    // What the test (and a curious user) can read: every refresh seq applied, in order.
    this.appliedSeqs = [];
    this.fullInits = [];
    this.resumes = [];
    this.keepalives = 0; // keepalive `refresh` requests sent
    this.deadConnections = 0; // connections dropped for want of a reply to one
  }

  start() {
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.stopKeepalive();
    if (this.socket) this.socket.close(1000, "bye");
  }

  connect() {
    if (this.stopped) return;
    this.stopKeepalive();
    this.handlers.onState(this.state.epoch === null ? "connecting" : "reconnecting");
    this.lastError = null;
    let socket;
    try {
      socket = new WebSocket(this.url);
    } catch (error) {
      this.schedule(`cannot open ${this.url}: ${error}`);
      return;
    }
    this.socket = socket;
    socket.addEventListener("open", () => this.sendInit());
    socket.addEventListener("message", (event) => {
      if (socket === this.socket && !this.stopped) this.receive(event.data);
    });
    socket.addEventListener("close", (event) => this.closed(socket, event));
  }

  sendInit() {
    const request = { action: "init", apiKey: this.apiKey };
    if (this.state.epoch !== null) {
      request.since = this.state.seq;
      request.epoch = this.state.epoch;
    }
    this.awaitingReply = true;
    this.socket.send(JSON.stringify(request));
  }

  receive(text) {
    // Anything that arrives proves the connection alive: the reply to a keepalive comes after
    // whatever was queued before it (requests are answered in order, SPEC 2.1 rule 2).
    clearTimeout(this.replyTimer);
    this.replyTimer = null;
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    switch (message.action) {
      case "init":
        this.state.applyInit(message);
        this.fullInits.push(message.seq);
        this.live();
        this.handlers.onInit();
        break;
      case "resume":
        if (message.seq !== this.state.seq || message.epoch !== this.state.epoch) {
          this.sendInit(); // not what was asked: take a full snapshot instead
          break;
        }
        this.resumes.push(message.seq);
        this.live();
        break;
      case "refresh":
        this.refresh(message);
        break;
      case "error":
        // Only `init` is answered with an error and a close; `unavailable` on a live connection
        // is the reply to a keepalive, which leaves the connection open (SPEC 2.1 rules 3, 9):
        // it is alive, its data merely not refreshed now.
        if (message.code === "unavailable" && !this.awaitingReply) break;
        this.lastError = message.code;
        this.handlers.onError(message.code, message.message);
        break;
      default:
        break;
    }
  }

  refresh(message) {
    if (this.awaitingReply) return; // rule 8: discard until the reply to init
    const verdict = classify(this.state, message);
    if (verdict === "apply") {
      const changes = this.state.applyRefresh(message);
      this.appliedSeqs.push(message.seq);
      this.handlers.onRefresh(changes);
    } else if (verdict === "resync") {
      this.sendInit();
    }
    // A refresh with seq <= last (the reply to a keepalive, usually) is ignored (rule 8).
  }

  live() {
    this.awaitingReply = false;
    this.failures = 0;
    // After the first init or resume of this socket; a later one (after a gap) keeps the cadence.
    if (this.keepaliveTimer === null) this.scheduleKeepalive(this.socket);
    this.handlers.onState("live");
  }

  scheduleKeepalive(socket) {
    this.keepaliveTimer = setTimeout(() => this.keepalive(socket), KEEPALIVE_MS);
  }

  /** Send the keepalive `refresh` (its reply is the bot's newest refresh, rule 9) and wait. */
  keepalive(socket) {
    if (socket !== this.socket || this.stopped) return; // an old socket's timer: nothing to do
    this.scheduleKeepalive(socket);
    if (socket.readyState !== WebSocket.OPEN) return; // closing: its close event follows
    socket.send(JSON.stringify({ action: "refresh", apiKey: this.apiKey }));
    this.keepalives += 1;
    if (this.replyTimer === null) {
      this.replyTimer = setTimeout(() => this.dead(socket), KEEPALIVE_REPLY_MS);
    }
  }

  /** No reply to a keepalive in 10 s: drop the connection and reconnect as after a close. */
  dead(socket) {
    if (socket !== this.socket || this.stopped) return;
    this.stopKeepalive();
    this.socket = null; // its close event, whenever it comes, is an old socket's
    this.deadConnections += 1;
    socket.close(); // a half-open connection may never answer the close either
    this.schedule(`no reply to the keepalive in ${KEEPALIVE_REPLY_MS / 1000} s`);
  }

  stopKeepalive() {
    clearTimeout(this.keepaliveTimer);
    clearTimeout(this.replyTimer);
    this.keepaliveTimer = null;
    this.replyTimer = null;
  }

  closed(socket, event) {
    if (socket !== this.socket || this.stopped) return;
    this.socket = null;
    this.stopKeepalive();
    if (event.code === CLOSE_UNAUTHORIZED || this.lastError === "unauthorized") {
      this.stopped = true;
      this.handlers.onState("unauthorized");
      return;
    }
    if (event.code === CLOSE_RATE_LIMITED || this.lastError === "rate_limited") {
      this.failures += 1;
      this.wait(RATE_LIMITED_WAIT_MS + Math.random() * BACKOFF_FIRST_MS, "rate-limited");
      return;
    }
    const why = this.lastError === "unavailable" ? "the bot's state is unavailable" : "";
    this.schedule(why || `closed ${event.code}${event.reason ? ` ${event.reason}` : ""}`);
  }

  schedule(reason) {
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.failures);
    this.failures += 1;
    this.wait(Math.random() * ceiling, "reconnecting", reason); // full jitter
  }

  wait(delayMs, stateName, reason = "") {
    this.handlers.onState(stateName, { delayMs, reason });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delayMs);
  }
}
