/** Message ids and their place in the broker's sequence (PROTOCOL "Message ids and order"). */

/** Compares two decimal integer strings without leading zeros (any length, no precision loss). */
function num(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

/**
 * Compares two message ids by their place in the sequence: a plain id `X` is at (X, 0), a
 * release `B.E` at (B, E). Negative when `a` comes first, 0 when equal, positive after.
 */
export function compareIds(a: string, b: string): number {
  const i = a.indexOf("."),
    j = b.indexOf(".");
  if (i < 0 && j < 0) return num(a, b); // the common case: two plain ids
  return (
    num(i < 0 ? a : a.slice(0, i), j < 0 ? b : b.slice(0, j)) ||
    num(i < 0 ? "0" : a.slice(i + 1), j < 0 ? "0" : b.slice(j + 1))
  );
}
