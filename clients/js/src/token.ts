/** Signed tokens (PROTOCOL section 12): when to refresh one. Nothing is verified here. */

/** The `exp` claim (seconds) of a JWT (three base64url parts), or undefined for any other token. */
export function tokenExpiry(token: string): number | undefined {
  const parts = token.split(".");
  if (parts.length !== 3) return undefined;
  try {
    const claims = JSON.parse(atob(parts[1]!.replace(/-/g, "+").replace(/_/g, "/")));
    return typeof claims.exp === "number" ? claims.exp : undefined;
  } catch {
    return undefined;
  }
}

/**
 * How long to wait, ms, before refreshing `token` at `now` (ms): `share` of its remaining
 * life; undefined for a token without `exp`. Never negative, never past what a timer holds.
 */
export function refreshDelay(token: string, now: number, share: number): number | undefined {
  const exp = tokenExpiry(token);
  return exp === undefined ? undefined : Math.min(2 ** 31 - 1, Math.max(0, (exp * 1000 - now) * share));
}
