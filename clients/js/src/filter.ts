/**
 * Which subscriptions of a connection an event frame is for. The broker sends a frame once
 * per connection however many of its subscriptions match, so the client matches the filters
 * itself (PROTOCOL section 5): hex values case-insensitively.
 */

type Data = Record<string, unknown>;

/** Equal, or both `0x` hex strings equal but for case. */
function same(want: unknown, got: unknown): boolean {
  return (
    want === got ||
    (typeof want === "string" &&
      typeof got === "string" &&
      /^0x/i.test(want) &&
      want.toLowerCase() === got.toLowerCase())
  );
}

/** True when `data` of an event on `channel` passes `filter` (confirmations aside). */
export function matches(channel: string, filter: Data, data: Data): boolean {
  const f = filter;
  switch (channel) {
    case "transactions":
      return f.tx_hash === undefined || same(f.tx_hash, data.tx_hash);
    case "state":
      return (
        (f.key === undefined || same(f.key, data.key)) &&
        (f.key_prefix === undefined ||
          String(data.key ?? "")
            .toLowerCase()
            .startsWith(String(f.key_prefix).toLowerCase()))
      );
    case "token_updates":
      return f.token_id === undefined || same(f.token_id, data.token_id);
    case "transaction_updates":
      return (
        f.address === undefined ||
        same(f.address, data.from) ||
        same(f.address, data.to) ||
        same(f.address, data.address)
      );
    case "market_data":
      return !Array.isArray(f.symbols) || f.symbols.includes(data.symbol);
  }
  return true;
}

/** The block an event names (`number` on blocks, else `block_number`), if any. */
export function blockOf(data: Data): number | undefined {
  const n = data.number ?? data.block_number;
  return typeof n === "number" ? n : undefined;
}
