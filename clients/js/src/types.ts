/** The types of the broker's channels, events, filters, commands and errors (docs/PROTOCOL.md). */

/** `blocks` / `new_block`. */
export interface BlockData {
  number: number;
  hash?: string;
  parent_hash?: string;
  timestamp?: string;
  transactions?: string[];
  [field: string]: unknown;
}

/** `transactions` / `tx_confirmed`. */
export interface TxConfirmedData {
  tx_hash: string;
  block_number: number;
  timestamp?: string;
  confirmations?: number;
  status?: string;
  [field: string]: unknown;
}

/** `state` / `state_update`; `value` is base64. */
export interface StateUpdateData {
  key: string;
  value: string;
  block_number: number;
  timestamp?: string;
  [field: string]: unknown;
}

/** `token_updates` / `update`. */
export interface TokenUpdateData {
  token_id: string;
  price?: string;
  volume?: string;
  timestamp?: string;
  [field: string]: unknown;
}

/** `transaction_updates` / `update`: at least one of `from`, `to`, `address`. */
export interface TransactionUpdateData {
  transaction_id: string;
  status: string;
  timestamp?: string;
  from?: string;
  to?: string;
  address?: string;
  amount?: string;
  token_id?: string;
  block_number?: number;
  [field: string]: unknown;
}

/** `market_data` / `update`. */
export interface MarketData {
  symbol: string;
  price?: string;
  change_24h?: string;
  volume_24h?: string;
  timestamp?: string;
  [field: string]: unknown;
}

/** Each channel's event data. */
export interface ChannelData {
  blocks: BlockData;
  transactions: TxConfirmedData;
  state: StateUpdateData;
  token_updates: TokenUpdateData;
  transaction_updates: TransactionUpdateData;
  market_data: MarketData;
}

/** Each channel's filter fields; an absent field matches everything. */
export interface ChannelFilter {
  blocks: { confirmations?: number };
  transactions: { confirmations?: number; tx_hash?: string };
  state: { confirmations?: number; key?: string; key_prefix?: string };
  token_updates: { token_id?: string };
  transaction_updates: { address?: string };
  market_data: { symbols?: string[] };
}

/** The six channels of the contract; other names are plain channels (when the broker allows them). */
export type Channel = keyof ChannelData;

/** What `onEvent` gets. */
export interface RustoriumEvent<D = unknown> {
  /** The broker's message id: a plain id `N` or a release id `B.E`. */
  id: string;
  /** The event type (`new_block`, `tx_confirmed`, `state_update`, `update`, or a publisher's own). */
  type: string;
  channel: string;
  data: D;
  /** `data.confirmations` where the broker sends it (`tx_confirmed`). */
  confirmations?: number;
}

/**
 * Error codes: the broker's (v1 names; the ws dialect's numbers map to them), plus the
 * client's own: `timeout` (no reply within `requestTimeout`), `disconnected` (the connection
 * ended after the request was sent: it is not sent again, its outcome is unknown),
 * `queue_full` (more than `maxQueue` requests waiting), `closed` (the client was closed),
 * `buffer_full` (reported when events were dropped from the buffer and are fetched again by
 * resume).
 */
export type ErrorCode =
  | "invalid_token"
  | "rate_limited"
  | "invalid_request"
  | "subscription_error"
  | "command_failed"
  | "forbidden"
  | "unavailable"
  | "timeout"
  | "disconnected"
  | "queue_full"
  | "closed"
  | "buffer_full";

/** Connection states reported by `client.on('state', fn)`. */
export type State = "connecting" | "connected" | "disconnected" | "closed";

/** What `client.on('gap', fn)` gets: the broker answered a resume with `recovered: false`. */
export interface Gap {
  /** The id the client resumed from (null: nothing received yet). */
  lastMessageId: string | null;
  /** Channels of the subscriptions the broker no longer had, subscribed again. */
  resubscribed: string[];
  /** The broker's subscription ids that failed. */
  failed: string[];
}

/** `token_info`. */
export interface TokenInfo {
  token_id: string;
  name: string;
  symbol: string;
  total_supply: string;
}

/** `balance`. */
export interface Balance {
  address: string;
  token_id: string;
  balance: string;
}

/** `transaction_response`. */
export interface TransactionResponse {
  transaction_id: string;
  status: string;
}

/** A WebSocket constructor (the browser's, Node 22's global, or the `ws` package). */
export interface WebSocketLike {
  readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  /** Node's `ws` package: drop the TCP connection without a closing handshake. */
  terminate?(): void;
}

/** A WebSocket implementation to use. */
export type WebSocketCtor = new (url: string) => WebSocketLike;

/** Settings of a client; every field but `url` and one of `token`/`getToken` has a default. */
export interface ClientOptions {
  /** `ws://HOST/ws` (node API dialect) or `ws://HOST/v1` (v1 dialect); `wss://` likewise. */
  url: string;
  /** The API key, or a signed token (JWT). */
  token?: string;
  /** Asked before every connection (and before a token refresh); wins over `token`. */
  getToken?: () => string | Promise<string>;
  /** The WebSocket implementation (default: the global `WebSocket`). */
  WebSocket?: WebSocketCtor;
  /** First reconnect wait, ms (default 1000). */
  backoffMin?: number;
  /** Longest reconnect wait, ms (default 30000). */
  backoffMax?: number;
  /** A request without reply after this long (from when it was sent) fails `timeout`, ms (default 10000). */
  requestTimeout?: number;
  /** Opening a connection longer than this is a failed attempt, ms (default 10000). */
  connectTimeout?: number;
  /** Nothing heard for this long is a dead connection, ms (default 70000: 2 broker heartbeat intervals + 10 s). */
  silenceTimeout?: number;
  /** Requests waiting while disconnected, at most (default 100); past it `queue_full`. */
  maxQueue?: number;
  /** Events waiting while an `onEvent` promise is pending, at most (default 1024). */
  bufferSize?: number;
  /** Requests sent at once on a fresh connection (default: /v1 5, /ws 200). */
  burst?: number;
  /** Requests per second after the burst (default: /v1 8, /ws 15: under 10/s and 1000/min). */
  perSecond?: number;
  /** A JWT is refreshed after this share of its remaining life (default 0.8). */
  refreshAt?: number;
}
