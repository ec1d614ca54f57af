/**
 * RustoriumClient: one WebSocket connection to the broker carrying every subscription and
 * request of the client; after any drop it reconnects (full-jitter backoff, or at once) and
 * resumes from the last event it handed on, so the application sees every event once and in
 * the broker's order.
 */

import { backoffDelay } from "./backoff.js";
import { blockOf, matches } from "./filter.js";
import { compareIds } from "./ids.js";
import { refreshDelay } from "./token.js";
import type {
  Balance,
  Channel,
  ChannelData,
  ChannelFilter,
  ClientOptions,
  ErrorCode,
  Gap,
  RustoriumEvent,
  State,
  TokenInfo,
  TransactionResponse,
  WebSocketCtor,
  WebSocketLike,
} from "./types.js";

/** An error with the broker's code (or the client's own, see {@link ErrorCode}). */
export class RustoriumError extends Error {
  /** The code, e.g. `invalid_token`, `rate_limited`, `command_failed`, `timeout`. */
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = "RustoriumError";
    this.code = code;
  }
}

/** A subscription made by {@link RustoriumClient.subscribe}. */
export interface Subscription {
  readonly channel: string;
  /** The broker's subscription id once made; rejects with a {@link RustoriumError} if refused. */
  readonly ready: Promise<string>;
  /** Stops the events at once and ends the subscription at the broker. */
  unsubscribe(): Promise<void>;
}

/** What the client counted (for tests and monitoring). */
export interface Stats {
  /** Connections opened. */
  connections: number;
  /** Resumes answered by the broker. */
  resumes: number;
  /** Resumes answered `recovered: false`. */
  gaps: number;
  /** Event frames dropped because they were at or before the last id handed on. */
  duplicates: number;
  /** Requests sent on the current connection (heartbeat responses not counted). */
  sent: number;
}

type Handler = (event: RustoriumEvent<any>) => unknown;
type Data = Record<string, unknown>;

interface Sub {
  channel: string;
  /** The filter as given (sent to the broker). */
  asked: Data;
  /** The filter without `confirmations` (matched here). */
  filter: Data;
  /** Its `confirmations` (1 when absent). */
  k: number;
  on: Handler;
  sid?: string;
  /** A subscribe for it is queued or waiting for its reply on this connection. */
  wait?: boolean;
  live: boolean;
  settle?: [(sid: string) => void, (e: RustoriumError) => void];
}

interface Req {
  type: string;
  data: unknown;
  ok: (data: any) => void;
  ko: (e: RustoriumError) => void;
  timer?: ReturnType<typeof setTimeout>;
  /** Internal (subscribe, reconnect): a missing reply drops the connection instead. */
  own?: boolean;
}

/** Buffered event: the frame, its subscriptions, the next one to hand it to. */
interface Entry {
  ev: RustoriumEvent;
  t: Sub[];
  i: number;
}

const CODES: Record<number, ErrorCode> = {
  4000: "invalid_token",
  4001: "rate_limited",
  4002: "invalid_request",
  4003: "command_failed",
  4006: "forbidden",
  4007: "unavailable",
};
/** Close codes after which a long-lived connection is resumed at once. */
const AT_ONCE = [1001, 1005, 1006, 4004, 4005];
/** The client's own close codes (any but 1000 keeps the subscriptions at the broker). */
const SILENT = 4100;
const OVERFLOW = 4101;
const REFUSED = 4102;

/** The browser's online/offline signals, where there are any. */
const g = globalThis as unknown as {
  addEventListener?: (name: string, fn: () => void) => void;
  removeEventListener?: (name: string, fn: () => void) => void;
  navigator?: { onLine?: boolean };
  WebSocket?: WebSocketCtor;
};

/** A client of the broker: see the README's "JavaScript client". */
export class RustoriumClient {
  /** What the client counted so far. */
  readonly stats: Stats = { connections: 0, resumes: 0, gaps: 0, duplicates: 0, sent: 0 };
  private _o: Required<Omit<ClientOptions, "token" | "getToken" | "WebSocket">> & ClientOptions;
  private _v1: boolean;
  private _ws?: WebSocketLike;
  private _state: State = "disconnected";
  private _subs: Sub[] = [];
  private _out: Req[] = [];
  private _wait = new Map<string, Req>();
  private _n = 0;
  private _token = "";
  private _next?: string;
  /** The id of the last event taken (handed on, or buffered to be). */
  private _last: string | null = null;
  private _head = -1;
  private _q: (Entry | undefined)[] = [];
  private _qi = 0;
  private _busy = false;
  private _drain = false;
  private _ready = false;
  private _opened = 0;
  private _heard = 0;
  private _fails = 0;
  private _tokens = 0;
  private _at = 0;
  private _t: Record<string, ReturnType<typeof setTimeout> | undefined> = {};
  private _ls: Record<string, ((arg: any) => void)[]> = {};
  private _online = () => {
    if (this._state !== "closed" && !this._ws) {
      clearTimeout(this._t.retry);
      this._connect();
    }
  };

  constructor(options: ClientOptions) {
    const path = new URL(options.url).pathname.replace(/\/$/, "");
    this._v1 = path.endsWith("/v1");
    if (!this._v1 && !path.endsWith("/ws")) throw new TypeError(`url must end in /ws or /v1: ${options.url}`);
    if (options.token === undefined && !options.getToken) throw new TypeError("token or getToken is required");
    this._o = {
      backoffMin: 1000,
      backoffMax: 30000,
      requestTimeout: 10000,
      connectTimeout: 10000,
      silenceTimeout: 70000,
      maxQueue: 100,
      bufferSize: 1024,
      burst: this._v1 ? 5 : 200,
      perSecond: this._v1 ? 8 : 15,
      refreshAt: 0.8,
      ...options,
    };
    g.addEventListener?.("online", this._online);
    // Listeners registered right after construction see the first "connecting".
    queueMicrotask(() => this._connect());
  }

  /**
   * Listens to `state` (connecting, connected, disconnected, closed), `gap` (a resume the
   * broker could not make whole), or `error` (a {@link RustoriumError} or what a handler
   * threw). Returns a function that stops listening.
   */
  on(name: "state", fn: (state: State) => void): () => void;
  on(name: "gap", fn: (gap: Gap) => void): () => void;
  on(name: "error", fn: (error: Error) => void): () => void;
  on(name: string, fn: (arg: any) => void): () => void {
    (this._ls[name] ??= []).push(fn);
    return () => {
      this._ls[name] = this._ls[name]!.filter((f) => f !== fn);
    };
  }

  /** The connection's state now. */
  get state(): State {
    return this._state;
  }

  /**
   * Subscribes to `channel` with `filter` (its fields, `confirmations` included); `onEvent`
   * gets each event once, in the broker's order. When it returns a promise the next event
   * waits for it (up to `bufferSize` events are held meanwhile).
   */
  subscribe<C extends Channel>(
    channel: C,
    filter: ChannelFilter[C] | null | undefined,
    onEvent: (event: RustoriumEvent<ChannelData[C]>) => unknown,
  ): Subscription;
  subscribe(
    channel: string,
    filter: Data | null | undefined,
    onEvent: (event: RustoriumEvent) => unknown,
  ): Subscription;
  subscribe(channel: string, filter: object | null | undefined, onEvent: Handler): Subscription {
    const asked = { ...(filter as Data) };
    const { confirmations, ...f } = asked;
    const k = typeof confirmations === "number" ? confirmations : 1;
    const sub: Sub = { channel, asked, filter: f, k, on: onEvent, live: true };
    const ready = new Promise<string>((ok, ko) => (sub.settle = [ok, ko]));
    ready.catch(() => {});
    if (this._state === "closed") this._refuse(sub, new RustoriumError("closed", "the client is closed"));
    else if (k > 1 && this._subs.some((s) => s.channel === channel && s.k > 1 && s.k !== k))
      // A release frame does not say which depth released it: one depth > 1 per channel.
      this._refuse(
        sub,
        new RustoriumError(
          "subscription_error",
          `${channel} already has another confirmations > 1: use a second client`,
        ),
      );
    else {
      this._subs.push(sub);
      if (this._ready) this._ask(sub);
    }
    return {
      channel,
      ready,
      unsubscribe: async () => {
        if (!sub.live) return;
        this._refuse(sub, new RustoriumError("closed", "unsubscribed"));
        // Not resumed after a drop, the broker forgets it after its resume window anyway.
        if (sub.sid && this._ready) await this._request("unsubscribe", { subscription_id: sub.sid }).catch(() => {});
      },
    };
  }

  /** `get_token_info`: the token's name, symbol and total supply. */
  getTokenInfo(tokenId: string): Promise<TokenInfo> {
    return this._request("get_token_info", { token_id: tokenId });
  }

  /** `get_balance` of `address` in `tokenId` (a decimal string). */
  getBalance(address: string, tokenId: string): Promise<Balance> {
    return this._request("get_balance", { address, token_id: tokenId });
  }

  /** `execute_transaction`: answered `pending` with its `transaction_id`; `amount` a decimal string. */
  executeTransaction(t: { from: string; to: string; amount: string; tokenId: string }): Promise<TransactionResponse> {
    return this._request("execute_transaction", { from: t.from, to: t.to, amount: t.amount, token_id: t.tokenId });
  }

  /** `publish` one event (a key with the `publish` role): resolves with its `{ ids }`. */
  publish(channel: string, data: unknown, options: { type?: string } = {}): Promise<{ ids: string[] }> {
    return this._request("publish", { channel, type: options.type, data });
  }

  /** Ends the client: closes with 1000 (the broker drops its subscriptions), fails what waits. */
  close(): void {
    if (this._state === "closed") return;
    this._end(1000);
    this._set("closed");
    g.removeEventListener?.("online", this._online);
    for (const k in this._t) clearTimeout(this._t[k]);
    const e = () => new RustoriumError("closed", "the client is closed");
    for (const r of this._out.splice(0)) r.ko(e());
    this._fail(e);
    for (const s of this._subs.slice()) this._refuse(s, e());
  }

  private _emit(name: string, arg: unknown): void {
    for (const fn of this._ls[name] ?? []) fn(arg);
  }

  private _set(state: State): void {
    if (this._state !== state) this._emit("state", (this._state = state));
  }

  private _refuse(sub: Sub, e: RustoriumError): void {
    sub.live = false;
    this._subs = this._subs.filter((s) => s !== sub);
    sub.settle?.[1](e);
    sub.settle = undefined;
  }

  /** Fails every request sent and not answered (they are never sent again). */
  private _fail(e: () => RustoriumError): void {
    for (const r of this._wait.values()) {
      clearTimeout(r.timer);
      if (!r.own) r.ko(e());
    }
    this._wait.clear();
  }

  private async _connect(): Promise<void> {
    if (this._state === "closed" || this._ws) return;
    if (g.navigator?.onLine === false) return this._set("disconnected"); // "online" calls again
    this._set("connecting");
    let token: string;
    try {
      token = this._next ?? (this._o.getToken ? await this._o.getToken() : this._o.token!);
    } catch (e) {
      this._emit("error", e);
      return this._retry(false);
    }
    this._next = undefined;
    // The client may have been closed, or connected by "online", meanwhile.
    if ((this._state as State) === "closed" || this._ws) return;
    this._token = token;
    const url = new URL(this._o.url);
    url.searchParams.set(this._v1 ? "api_key" : "token", token);
    let ws: WebSocketLike;
    try {
      ws = new (this._o.WebSocket ?? g.WebSocket!)(url.href);
    } catch (e) {
      this._emit("error", e);
      return this._retry(false);
    }
    this._ws = ws;
    this._opened = 0;
    this._t.open = setTimeout(() => this._end(SILENT), this._o.connectTimeout);
    ws.onopen = () => this._open();
    ws.onmessage = (m) => this._frame(m.data);
    ws.onclose = (c) => ws === this._ws && this._closed(c.code, c.reason);
    ws.onerror = () => {};
  }

  private _open(): void {
    clearTimeout(this._t.open);
    this._opened = this._heard = this._at = Date.now();
    this._tokens = this._o.burst;
    this.stats.connections++;
    this.stats.sent = 0;
    this._alive();
    const sids = this._subs.filter((s) => s.sid).map((s) => s.sid);
    if (!sids.length) return this._up();
    // One message restores every subscription; replayed events follow its reply.
    this._send(
      {
        type: "reconnect",
        data: { last_message_id: this._last, subscriptions: sids },
        own: true,
        ko: () => this._end(REFUSED),
        ok: (d: { recovered?: boolean; subscriptions?: string[]; failed?: string[] }) => {
          this.stats.resumes++;
          const resubscribed: string[] = [];
          for (const s of this._subs)
            if (s.sid && !d.subscriptions?.includes(s.sid)) {
              s.sid = undefined;
              resubscribed.push(s.channel);
            }
          if (!d.recovered || resubscribed.length) {
            this.stats.gaps++;
            this._emit("gap", { lastMessageId: this._last, resubscribed, failed: d.failed ?? [] });
          }
          this._up();
        },
      },
      true,
    );
  }

  /** The connection is open and resumed: subscribe what is not, send what waits. */
  private _up(): void {
    this._ready = true;
    this._set("connected");
    for (const s of this._subs) if (!s.sid) this._ask(s);
    this._flush();
    this._refresh();
  }

  private _ask(sub: Sub): void {
    if (sub.wait) return;
    sub.wait = true;
    const filter = sub.asked;
    this._out.push({
      type: "subscribe",
      data: Object.keys(filter).length ? { channel: sub.channel, filter } : { channel: sub.channel },
      own: true,
      ok: (d: { subscription_id: string }) => {
        sub.wait = false;
        // Unsubscribed while the reply was on its way.
        if (!sub.live) return void this._request("unsubscribe", { subscription_id: d.subscription_id }).catch(() => {});
        sub.sid = d.subscription_id;
        sub.settle?.[0](sub.sid);
        sub.settle = undefined;
      },
      ko: (e) => {
        sub.wait = false;
        if (sub.live && !sub.settle) this._emit("error", e);
        this._refuse(sub, e.code === "command_failed" ? new RustoriumError("subscription_error", e.message) : e);
      },
    });
    this._flush();
  }

  /** Refreshes a JWT in place before it expires (PROTOCOL section 12). */
  private _refresh(): void {
    clearTimeout(this._t.refresh);
    const get = this._o.getToken;
    const wait = refreshDelay(this._token, Date.now(), this._o.refreshAt);
    if (!get || wait === undefined) return;
    this._t.refresh = setTimeout(async () => {
      try {
        const token = await get();
        if (token === this._token || !this._ready) return;
        await this._request("refresh", { token });
        this._token = token;
        this._refresh();
      } catch (e) {
        this._emit("error", e);
      }
    }, wait);
  }

  private _request<T>(type: string, data: unknown): Promise<T> {
    return new Promise<T>((ok, ko) => {
      if (this._state === "closed") return ko(new RustoriumError("closed", "the client is closed"));
      if (this._out.length >= this._o.maxQueue)
        return ko(new RustoriumError("queue_full", `${this._o.maxQueue} requests wait already`));
      this._out.push({ type, data, ok, ko });
      this._flush();
    });
  }

  /** Sends waiting requests as the pace allows (a token bucket under the broker's cap). */
  private _flush(): void {
    clearTimeout(this._t.flush);
    if (!this._ready) return;
    const o = this._o,
      now = Date.now();
    this._tokens = Math.min(o.burst, this._tokens + ((now - this._at) * o.perSecond) / 1000);
    this._at = now;
    while (this._out.length && this._tokens >= 1) {
      this._tokens--;
      this._send(this._out.shift()!);
    }
    if (this._out.length) this._t.flush = setTimeout(() => this._flush(), ((1 - this._tokens) * 1000) / o.perSecond);
  }

  private _send(r: Req, first = false): void {
    const id = "c" + ++this._n;
    this._wait.set(id, r);
    this.stats.sent++;
    if (first) this._tokens--;
    this._ws!.send(JSON.stringify({ type: r.type, id, data: r.data }));
    r.timer = setTimeout(() => {
      this._wait.delete(id);
      if (r.own) this._end(SILENT);
      else r.ko(new RustoriumError("timeout", `no reply to ${r.type} within ${this._o.requestTimeout} ms`));
    }, this._o.requestTimeout);
  }

  private _alive(): void {
    const left = this._heard + this._o.silenceTimeout - Date.now();
    this._t.alive = setTimeout(() => (left > 0 ? this._alive() : this._end(SILENT)), Math.max(left, 0));
  }

  private _frame(raw: unknown): void {
    this._heard = Date.now();
    let m: { type: string; id?: string | number | null; channel?: string; data?: any; error?: any };
    try {
      m = JSON.parse(String(raw));
    } catch (e) {
      return this._emit("error", e);
    }
    if (m.channel !== undefined) return this._event(m as RustoriumEvent<Data>);
    if (m.type === "heartbeat")
      return this._ws!.send(JSON.stringify({ type: "heartbeat_response", data: { timestamp: m.data?.timestamp } }));
    const r = m.id == null ? undefined : this._wait.get(String(m.id));
    if (r) {
      this._wait.delete(String(m.id));
      clearTimeout(r.timer);
    }
    if (m.type !== "error") return r?.ok(m.data);
    const e = this._v1
      ? new RustoriumError(m.data?.code, m.data?.message)
      : new RustoriumError(CODES[m.error?.code] ?? "invalid_request", m.error?.message);
    if (r) r.ko(e);
    // An unanswered refusal of the key is followed by its close (4000), which decides.
    else if (e.code !== "invalid_token") this._emit("error", e);
  }

  private _event(m: RustoriumEvent<Data>): void {
    const id = String(m.id);
    if (this._last !== null && compareIds(id, this._last) <= 0) {
      this.stats.duplicates++;
      return;
    }
    const data = m.data ?? {},
      ch = m.channel,
      release = id.includes("."),
      n = blockOf(data);
    // A release goes to the subscriptions with confirmations > 1; a plain id to those with 1,
    // and to deeper ones when the event was already that deep (head known) or none has 1.
    let t: Sub[] = [],
      deeper: Sub[] | undefined;
    for (const s of this._subs)
      if (s.sid && s.channel === ch && matches(ch, s.filter, data)) {
        if (release ? s.k > 1 : s.k < 2 || (n !== undefined && n + s.k - 1 <= this._head)) t.push(s);
        else if (!release) (deeper ??= []).push(s);
      }
    if (!t.length && deeper) t = deeper;
    if (ch === "blocks" && n !== undefined)
      this._head = Math.max(this._head, n + (release ? Math.max(...t.map((s) => s.k), 1) - 1 : 0));
    this._last = id;
    const ev: RustoriumEvent<Data> = { id, type: m.type, channel: ch, data };
    if (typeof data.confirmations === "number") ev.confirmations = data.confirmations;
    if (this._q.length - this._qi >= this._o.bufferSize) {
      // onEvent is too slow: drop what waits, resume from the last event taken once it is done.
      const head = this._q[this._qi];
      this._q = head ? [head] : [];
      this._qi = 0;
      this._last = head ? head.ev.id : this._handed;
      this._drain = true;
      return this._end(OVERFLOW);
    }
    this._q.push({ ev, t, i: 0 });
    if (!this._busy) this._pump();
  }

  /** The id of the last event handed to every handler it was for. */
  private _handed: string | null = null;

  private _pump(): void {
    while (!this._busy && this._qi < this._q.length) {
      const e = this._q[this._qi]!;
      while (e.i < e.t.length) {
        const s = e.t[e.i++]!;
        if (!s.live) continue;
        let r: unknown;
        try {
          r = s.on(e.ev);
        } catch (x) {
          this._emit("error", x);
        }
        if (r && typeof (r as Promise<void>).then === "function") {
          this._busy = true;
          const go = () => {
            this._busy = false;
            this._pump();
          };
          (r as Promise<void>).then(go, (x) => {
            this._emit("error", x);
            go();
          });
          return;
        }
      }
      this._handed = e.ev.id;
      this._q[this._qi++] = undefined;
    }
    if (this._qi === this._q.length) this._q.length = this._qi = 0;
    if (!this._busy && this._drain) {
      this._drain = false;
      this._retry(true);
    }
  }

  /** Ends the current connection from this side with `code` (never 1000 unless closing). */
  private _end(code: number): void {
    const ws = this._ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    try {
      // A silent connection may be dead: Node's `ws` can drop it at once instead of
      // waiting for a close frame that will not come (a browser times it out itself).
      if (code === SILENT && ws.terminate) ws.terminate();
      else ws.close(code);
    } catch {
      // Closing a socket that never opened may throw; it is gone either way.
    }
    if (code !== 1000) this._closed(code === SILENT ? 1006 : code, "");
    else this._ws = undefined;
  }

  private _closed(code: number, reason: string): void {
    const lived = this._ready && Date.now() - this._opened >= this._o.backoffMin;
    this._ws = undefined;
    this._ready = false;
    for (const k of ["open", "alive", "flush", "refresh"]) clearTimeout(this._t[k]);
    this._fail(() => new RustoriumError("disconnected", `the connection ended (${code}) before the reply`));
    this._out = this._out.filter((r) => !r.own);
    for (const s of this._subs) s.wait = false;
    if (this._state === "closed") return;
    this._set("disconnected");
    if (code === 4000) return void this._refused(reason);
    if (this._drain) return; // reconnects once the handlers took what waits
    this._retry(lived && AT_ONCE.includes(code), lived);
  }

  /** The broker refused the token (4000): retry only with a new one from getToken. */
  private async _refused(reason: string): Promise<void> {
    let token: string | undefined;
    try {
      token = await this._o.getToken?.();
    } catch {
      token = undefined;
    }
    if (token !== undefined && token !== this._token) {
      this._next = token;
      return this._retry(false);
    }
    this._emit("error", new RustoriumError("invalid_token", reason || "the broker refused the token (4000)"));
    this.close();
  }

  /**
   * Reconnects "at once" (after a random share of `backoffMin`, so that a broker restart
   * does not bring every client back in the same instant), or after the backoff wait (which
   * starts over after a long-lived connection).
   */
  private _retry(now: boolean, lived = false): void {
    if (this._state === "closed") return;
    if (lived) this._fails = 0;
    const o = this._o;
    const wait = now ? Math.random() * o.backoffMin : backoffDelay(this._fails++, o.backoffMin, o.backoffMax);
    clearTimeout(this._t.retry);
    this._t.retry = setTimeout(() => this._connect(), wait);
  }
}
