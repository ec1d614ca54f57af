/** rustorium-client: the JavaScript client of rustorium-broker, for browsers and Node. */
export { RustoriumClient, RustoriumError } from "./client.js";
export type { Stats, Subscription } from "./client.js";
export { backoffDelay } from "./backoff.js";
export { compareIds } from "./ids.js";
export { refreshDelay, tokenExpiry } from "./token.js";
export type * from "./types.js";
