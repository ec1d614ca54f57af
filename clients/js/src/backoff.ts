/** The reconnect wait: full-jitter exponential backoff between `min` and `max`. */

/**
 * The wait before attempt `failures + 1` after `failures` failed attempts in a row, for a
 * random draw `r` in [0, 1): `min` plus a random share of `min * 2^failures`, at most `max`.
 * With the defaults (1 s, 30 s): 1-2 s, 1-3 s, 1-5 s, 1-9 s, 1-17 s, then 1-30 s.
 */
export function backoffDelay(failures: number, min: number, max: number, r = Math.random()): number {
  return Math.min(max, min + r * Math.min(max, min * 2 ** Math.min(failures, 30)));
}
