//! The ledger's configuration (`[ledger]`) and its genesis: tokens with name, symbol,
//! total supply, a starting price, and the funded accounts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One genesis token (`[[ledger.tokens]]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GenesisToken {
    /// The token's id, as clients name it (`0x…`).
    pub token_id: String,
    /// Display name.
    pub name: String,
    /// Symbol; the demo price feed publishes `SYMBOL/USD` on `market_data`.
    pub symbol: String,
    /// Total supply, a decimal integer string; the balances must add up to it.
    pub total_supply: String,
    /// Starting price in USD, a decimal string.
    pub price: String,
    /// Funded accounts: address → amount (decimal integer string).
    pub balances: BTreeMap<String, String>,
}

/// The demo accounts of the default genesis.
pub const DEMO_ACCOUNTS: [&str; 4] = [
    "0xa11ce00000000000000000000000000000000001",
    "0xb0b0000000000000000000000000000000000002",
    "0xc4a0100000000000000000000000000000000003",
    "0xd4e0000000000000000000000000000000000004",
];

fn default_tokens() -> Vec<GenesisToken> {
    let funded = |amounts: [&str; 4]| {
        DEMO_ACCOUNTS
            .iter()
            .zip(amounts)
            .map(|(a, n)| (a.to_string(), n.to_string()))
            .collect()
    };
    vec![
        GenesisToken {
            token_id: "0x4d544b0000000000000000000000000000000001".into(),
            name: "My Token".into(),
            symbol: "MTK".into(),
            total_supply: "1000000".into(),
            price: "1.23".into(),
            balances: funded(["400000", "300000", "200000", "100000"]),
        },
        GenesisToken {
            token_id: "0x53544b0000000000000000000000000000000002".into(),
            name: "Stake Token".into(),
            symbol: "STK".into(),
            total_supply: "5000000".into(),
            price: "0.45".into(),
            balances: funded(["2000000", "1500000", "1000000", "500000"]),
        },
    ]
}

/// `[ledger]`: the built-in backend of the standalone broker.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LedgerConfig {
    /// Whether the built-in ledger answers commands. Default true.
    pub enabled: bool,
    /// Milliseconds between blocks. Default 2000.
    pub block_interval_ms: u64,
    /// Whether a block is produced when no transaction is pending. Default true.
    pub empty_blocks: bool,
    /// Transfers waiting for a block, at most; past it `command_failed`. Default 10000.
    pub max_pending_transactions: usize,
    /// Transfers per block, at most; the rest wait for the next. Default 1000.
    pub max_block_transactions: usize,
    /// Distinct (token, address) balances, at most; a transfer to a new address past it
    /// fails. Default 1000000.
    pub max_accounts: usize,
    /// The genesis tokens. Default: MTK and STK held by four demo accounts.
    pub tokens: Vec<GenesisToken>,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            enabled: true,
            block_interval_ms: 2000,
            empty_blocks: true,
            max_pending_transactions: 10_000,
            max_block_transactions: 1000,
            max_accounts: 1_000_000,
            tokens: default_tokens(),
        }
    }
}

/// `[demo]`: synthetic activity so a fresh broker is alive at once.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Whether the synthetic feeds run. Default true; needs the ledger.
    pub enabled: bool,
    /// Milliseconds between synthetic transfers. Default 700.
    pub transfer_interval_ms: u64,
    /// Milliseconds between synthetic price updates (all tokens). Default 1000.
    pub price_interval_ms: u64,
    /// Synthetic transfers in all, after which that feed stops. Default 100000.
    pub max_transfers: u64,
    /// Synthetic price rounds in all, after which that feed stops. Default 100000.
    pub max_price_updates: u64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            enabled: true,
            transfer_interval_ms: 700,
            price_interval_ms: 1000,
            max_transfers: 100_000,
            max_price_updates: 100_000,
        }
    }
}

fn is_address(text: &str) -> bool {
    text.strip_prefix("0x")
        .is_some_and(|h| !h.is_empty() && h.len() <= 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Checks the ledger and demo sections; the error is `(field, message)`.
pub fn validate(ledger: &LedgerConfig, demo: &DemoConfig) -> Result<(), (String, String)> {
    let err = |f: String, m: &str| Err((f, m.to_owned()));
    if ledger.block_interval_ms < 10 {
        return err("ledger.block_interval_ms".into(), "must be at least 10");
    }
    for (field, v) in [
        (
            "ledger.max_pending_transactions",
            ledger.max_pending_transactions,
        ),
        (
            "ledger.max_block_transactions",
            ledger.max_block_transactions,
        ),
        ("ledger.max_accounts", ledger.max_accounts),
    ] {
        if v == 0 {
            return err(field.into(), "must be at least 1");
        }
    }
    for (i, t) in ledger.tokens.iter().enumerate() {
        let f = |name: &str| format!("ledger.tokens[{i}].{name}");
        if t.token_id.is_empty() || t.token_id.len() > 256 {
            return err(f("token_id"), "must be 1 to 256 characters");
        }
        if ledger.tokens[..i]
            .iter()
            .any(|o| o.token_id.eq_ignore_ascii_case(&t.token_id))
        {
            return err(f("token_id"), "is used by another token");
        }
        if t.symbol.is_empty() || ledger.tokens[..i].iter().any(|o| o.symbol == t.symbol) {
            return err(f("symbol"), "must be non-empty and unique");
        }
        let Ok(supply) = t.total_supply.parse::<u128>() else {
            return err(f("total_supply"), "must be a decimal integer string");
        };
        if !t
            .price
            .parse::<f64>()
            .is_ok_and(|p| p.is_finite() && p >= 0.0)
        {
            return err(f("price"), "must be a non-negative decimal string");
        }
        let mut sum: u128 = 0;
        for (addr, amount) in &t.balances {
            if !is_address(&addr.to_ascii_lowercase()) {
                return err(
                    f("balances"),
                    &format!("\"{addr}\" is not a 0x hex address"),
                );
            }
            let Some(n) = amount.parse::<u128>().ok().and_then(|n| sum.checked_add(n)) else {
                return err(
                    f("balances"),
                    &format!("the amount of {addr} is not a decimal integer string"),
                );
            };
            sum = n;
        }
        if sum != supply {
            return err(
                f("balances"),
                &format!("add up to {sum}, but total_supply is {supply}"),
            );
        }
    }
    if demo.enabled && !ledger.enabled {
        return err("demo.enabled".into(), "needs ledger.enabled = true");
    }
    if demo.transfer_interval_ms < 10 || demo.price_interval_ms < 10 {
        return err("demo".into(), "intervals must be at least 10 ms");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_genesis_is_valid() {
        assert_eq!(
            validate(&LedgerConfig::default(), &DemoConfig::default()),
            Ok(())
        );
        for a in DEMO_ACCOUNTS {
            assert_eq!(a.len(), 42, "{a}");
        }
    }

    #[test]
    fn balances_must_add_up() {
        let mut l = LedgerConfig::default();
        l.tokens[0].total_supply = "7".into();
        let e = validate(&l, &DemoConfig::default());
        assert_eq!(
            e.err().map(|e| e.0),
            Some("ledger.tokens[0].balances".into())
        );
    }
}
