//! A hub's subscription index: which subscribers an event may match, found without
//! looking at the others. Each subscription is filed once under the most selective field
//! of its filter ([`Filter::index_key`]): by value for the equality fields (`tx_hash`,
//! `key`, `token_id`, `address` matching `from`, `to` or `address`, each of `symbols`),
//! by prefix for `key_prefix`, and in a set for the unfiltered ones (and those with
//! `confirmations` only). An event is looked up by its values, normalised once
//! ([`filter::normalise`]); for a `key` it visits each of its prefixes that some
//! subscription names, so a lookup is bounded by the key's length.
//!
//! The index finds candidates; the hub still checks every field with
//! [`Filter::matches`] (a filter with `key` and `key_prefix` is filed under `key`). It
//! holds exactly the subscriptions filed in it: the hub removes each on unsubscribe,
//! connection close and move, so it is as large as the subscriptions it indexes.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use serde_json::Value;

use crate::filter::{self, Filter, IndexField, IndexKey};

/// Who holds the subscriptions in one place of the index, with how many each holds there
/// (a connection may file several subscriptions under one value).
type Bucket<K> = HashMap<K, u32>;

/// The index of one hub, over holders `K` (the hub's connection ids).
#[derive(Debug)]
pub struct Index<K> {
    /// By equality field, then by normalised value.
    values: HashMap<IndexField, HashMap<Box<str>, Bucket<K>>>,
    /// By normalised `key_prefix`.
    prefixes: HashMap<Box<str>, Bucket<K>>,
    /// The byte lengths of the prefixes filed, with how many prefixes have each: an
    /// event's key is probed at these lengths only.
    prefix_lens: BTreeMap<usize, usize>,
    /// Unfiltered subscriptions: every event is theirs as far as the index can tell.
    all: Bucket<K>,
}

impl<K> Default for Index<K> {
    fn default() -> Self {
        Index {
            values: HashMap::new(),
            prefixes: HashMap::new(),
            prefix_lens: BTreeMap::new(),
            all: HashMap::new(),
        }
    }
}

fn add<K: Hash + Eq>(bucket: &mut Bucket<K>, holder: K) {
    *bucket.entry(holder).or_insert(0) += 1;
}

/// Takes one filing of `holder` out of `bucket`; true when the bucket is now empty.
fn take<K: Hash + Eq>(bucket: &mut Bucket<K>, holder: &K) -> bool {
    if let Some(n) = bucket.get_mut(holder) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            bucket.remove(holder);
        }
    }
    bucket.is_empty()
}

impl<K: Copy + Hash + Eq + Ord> Index<K> {
    /// Files a subscription of `holder` with `filter`.
    pub fn insert(&mut self, filter: &Filter, holder: K) {
        match filter.index_key() {
            IndexKey::Value(field, value) => self.insert_value(field, value, holder),
            IndexKey::Symbols(symbols) => {
                for s in symbols {
                    self.insert_value(IndexField::Symbol, s, holder);
                }
            }
            IndexKey::Prefix(prefix) => {
                let prefix = filter::normalise(prefix);
                let bucket = match self.prefixes.get_mut(&*prefix) {
                    Some(b) => b,
                    None => {
                        *self.prefix_lens.entry(prefix.len()).or_insert(0) += 1;
                        self.prefixes.entry(Box::from(&*prefix)).or_default()
                    }
                };
                add(bucket, holder);
            }
            IndexKey::All => add(&mut self.all, holder),
        }
    }

    fn insert_value(&mut self, field: IndexField, value: &str, holder: K) {
        let value = if field.hex_folds() {
            filter::normalise(value)
        } else {
            value.into()
        };
        let values = self.values.entry(field).or_default();
        match values.get_mut(&*value) {
            Some(b) => add(b, holder),
            None => add(values.entry(Box::from(&*value)).or_default(), holder),
        }
    }

    /// Takes out a subscription of `holder` filed with `filter` (the same filter it was
    /// filed with).
    pub fn remove(&mut self, filter: &Filter, holder: K) {
        match filter.index_key() {
            IndexKey::Value(field, value) => self.remove_value(field, value, &holder),
            IndexKey::Symbols(symbols) => {
                for s in symbols {
                    self.remove_value(IndexField::Symbol, s, &holder);
                }
            }
            IndexKey::Prefix(prefix) => {
                let prefix = filter::normalise(prefix);
                let emptied = self
                    .prefixes
                    .get_mut(&*prefix)
                    .is_some_and(|b| take(b, &holder));
                if emptied {
                    self.prefixes.remove(&*prefix);
                    if let Some(n) = self.prefix_lens.get_mut(&prefix.len()) {
                        *n -= 1;
                        if *n == 0 {
                            self.prefix_lens.remove(&prefix.len());
                        }
                    }
                }
            }
            IndexKey::All => {
                take(&mut self.all, &holder);
            }
        }
    }

    fn remove_value(&mut self, field: IndexField, value: &str, holder: &K) {
        let value = if field.hex_folds() {
            filter::normalise(value)
        } else {
            value.into()
        };
        let Some(values) = self.values.get_mut(&field) else {
            return;
        };
        if values.get_mut(&*value).is_some_and(|b| take(b, holder)) {
            values.remove(&*value);
        }
        if values.is_empty() {
            self.values.remove(&field);
        }
    }

    /// The holders of unfiltered subscriptions: every event is a candidate for them.
    pub fn unfiltered(&self) -> impl Iterator<Item = &K> {
        self.all.keys()
    }

    /// Whether `holder` has an unfiltered subscription here.
    pub fn is_unfiltered(&self, holder: &K) -> bool {
        self.all.contains_key(holder)
    }

    /// Appends to `out` (cleared first) the holders whose filed subscriptions an event
    /// with `data` may match, other than the unfiltered ones, each once, in order.
    pub fn filtered(&self, data: &Value, out: &mut Vec<K>) {
        out.clear();
        for (field, values) in &self.values {
            for name in field.event_fields() {
                let Some(v) = data.get(*name).and_then(Value::as_str) else {
                    continue;
                };
                let v = if field.hex_folds() {
                    filter::normalise(v)
                } else {
                    v.into()
                };
                if let Some(b) = values.get(&*v) {
                    out.extend(b.keys().copied());
                }
            }
        }
        if !self.prefixes.is_empty() {
            if let Some(key) = data.get("key").and_then(Value::as_str) {
                let key = filter::normalise(key);
                for &len in self.prefix_lens.keys() {
                    let Some(head) = key.get(..len) else {
                        // Past the key's end (shorter lengths have been probed), or not on
                        // a character boundary (no filed prefix ends there).
                        if len > key.len() {
                            break;
                        }
                        continue;
                    };
                    if let Some(b) = self.prefixes.get(head) {
                        out.extend(b.keys().copied());
                    }
                }
            }
        }
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
    }

    /// Whether nothing is filed.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.prefixes.is_empty() && self.all.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::ChannelKind;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde_json::{json, Map};

    /// Values drawn from a small set, so filters and events collide often, in both cases.
    const VALUES: [&str; 8] = ["0xab", "0xAB", "0XaB", "0xabc", "ab", "AB", "0x", "é"];

    fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
        from[rng.random_range(0..from.len())]
    }

    /// A random filter of `kind`, and whether the index alone decides its matching (all
    /// but a `state` filter with both `key` and `key_prefix`, filed under `key`, whose
    /// prefix the matcher checks).
    fn random_filter(rng: &mut StdRng, kind: ChannelKind) -> Option<(Filter, bool)> {
        let mut data = Map::new();
        for field in kind.filter_fields() {
            if !rng.random_bool(0.5) {
                continue;
            }
            let value = match *field {
                "confirmations" => json!(rng.random_range(1..4)),
                "symbols" => {
                    let n = rng.random_range(1..4);
                    json!((0..n).map(|_| pick(rng, &VALUES)).collect::<Vec<_>>())
                }
                _ => json!(pick(rng, &VALUES)),
            };
            data.insert((*field).into(), value);
        }
        let decides = !(data.contains_key("key") && data.contains_key("key_prefix"));
        Filter::parse(kind, kind.name(), &data, 64)
            .ok()
            .map(|f| (f, decides))
    }

    fn random_event(rng: &mut StdRng) -> Value {
        let mut data = Map::new();
        for field in [
            "tx_hash", "key", "token_id", "from", "to", "address", "symbol",
        ] {
            if rng.random_bool(0.6) {
                let v = pick(rng, &VALUES);
                // Keys longer than any prefix too, so prefixes are probed.
                let v = if field == "key" && rng.random_bool(0.5) {
                    format!("{v}{}", pick(rng, &VALUES))
                } else {
                    v.to_owned()
                };
                data.insert(field.into(), json!(v));
            }
        }
        Value::Object(data)
    }

    #[test]
    fn a_subscription_is_found_iff_its_filter_matches() {
        let mut rng = StdRng::seed_from_u64(23);
        for kind in ChannelKind::KNOWN {
            for _round in 0..40 {
                let mut index = Index::default();
                let filters: Vec<(Filter, bool)> = (0..30)
                    .filter_map(|_| random_filter(&mut rng, kind))
                    .collect();
                for (i, (f, _)) in filters.iter().enumerate() {
                    index.insert(f, i);
                }
                // Take a few out again: they must not be found.
                let removed: Vec<usize> = (0..filters.len()).filter(|i| i % 7 == 3).collect();
                for &i in &removed {
                    index.remove(&filters[i].0, i);
                }
                let mut found = Vec::new();
                for _ in 0..40 {
                    let event = random_event(&mut rng);
                    index.filtered(&event, &mut found);
                    let mut candidates = found.clone();
                    candidates.extend(index.unfiltered().copied());
                    for (i, (f, decides)) in filters.iter().enumerate() {
                        let matches = f.matches(&event) && !removed.contains(&i);
                        let is_candidate = candidates.contains(&i);
                        assert!(
                            !matches || is_candidate,
                            "{kind:?}: {f:?} matches {event} but the index missed it"
                        );
                        // With one indexed field the index alone decides; with `key`
                        // and `key_prefix` both, the matcher checks the prefix.
                        if is_candidate && !matches && !removed.contains(&i) {
                            assert!(
                                !decides,
                                "{kind:?}: {f:?} found for {event} but does not match"
                            );
                        }
                        if removed.contains(&i) {
                            assert!(
                                !candidates.contains(&i),
                                "{kind:?}: removed {f:?} still found for {event}"
                            );
                        }
                    }
                }
                for (i, (f, _)) in filters.iter().enumerate() {
                    if !removed.contains(&i) {
                        index.remove(f, i);
                    }
                }
                assert!(
                    index.is_empty(),
                    "{kind:?}: the index holds what was removed"
                );
            }
        }
    }

    #[test]
    fn an_address_is_found_by_from_to_or_address_in_any_case() {
        let mut index = Index::default();
        let Ok(f) = Filter::parse(
            ChannelKind::TransactionUpdates,
            "transaction_updates",
            &serde_json::from_value(json!({ "address": "0xAbC" })).unwrap_or_default(),
            64,
        ) else {
            panic!("filter refused")
        };
        index.insert(&f, 7u64);
        index.insert(&f, 7u64);
        let mut out = Vec::new();
        for field in ["from", "to", "address"] {
            index.filtered(&json!({ field: "0XABC" }), &mut out);
            assert_eq!(out, [7], "{field}");
        }
        index.filtered(&json!({ "from": "0xabc", "to": "0xABC" }), &mut out);
        assert_eq!(out, [7], "one holder once");
        index.remove(&f, 7);
        index.filtered(&json!({ "from": "0xabc" }), &mut out);
        assert_eq!(out, [7], "filed twice, removed once");
        index.remove(&f, 7);
        assert!(index.is_empty());
    }

    #[test]
    fn a_key_visits_only_the_prefix_lengths_filed() {
        let mut index = Index::default();
        let prefix = |p: &str| {
            Filter::parse(
                ChannelKind::State,
                "state",
                &serde_json::from_value(json!({ "key_prefix": p })).unwrap_or_default(),
                64,
            )
        };
        let (Ok(short), Ok(long)) = (prefix("0xA"), prefix("0xab12")) else {
            panic!("filter refused")
        };
        index.insert(&short, 1u64);
        index.insert(&long, 2u64);
        assert_eq!(
            index.prefix_lens.keys().copied().collect::<Vec<_>>(),
            [3, 6]
        );
        let mut out = Vec::new();
        index.filtered(&json!({ "key": "0XAB123" }), &mut out);
        assert_eq!(out, [1, 2]);
        index.filtered(&json!({ "key": "0xa" }), &mut out);
        assert_eq!(out, [1]);
        index.filtered(&json!({ "key": "0xb" }), &mut out);
        assert!(out.is_empty());
    }
}
