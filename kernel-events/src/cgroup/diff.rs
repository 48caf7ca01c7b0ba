//! What changed: readings of `cgroup.events` and `memory.events` against the last state, and a
//! parent's children against the last listing.
//!
//! Both files are "flat keyed": one `key value` line per entry. They are read whole, in one
//! `pread` at offset 0 (`cgroupfs::read_snapshot`: one reading is one snapshot of the kernel's
//! counters), parsed strictly, and compared with the last reading. Nothing here trusts the
//! contents: a line that is not `key value` with a decimal `u64` value is skipped and counted,
//! and a key missing from a reading keeps its last value, so a bad reading can neither invent
//! nor lose counts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::model::{CgroupEvent, CgroupState};

/// Applies a reading of `cgroup.events` to `state` and pushes what changed; returns the
/// anomalies found (malformed lines, `populated` missing).
pub(super) fn apply_events_reading(
    path: &Path,
    state: &mut CgroupState,
    bytes: &[u8],
    out: &mut Vec<CgroupEvent>,
) -> u64 {
    let now = events_reading((state.populated, state.frozen), &parse_flat_keyed(bytes));
    if now.populated != state.populated {
        state.populated = now.populated;
        out.push(CgroupEvent::Populated {
            path: path.to_path_buf(),
            populated: now.populated,
        });
    }
    if now.frozen != state.frozen {
        state.frozen = now.frozen;
        out.push(CgroupEvent::Frozen {
            path: path.to_path_buf(),
            frozen: now.frozen,
        });
    }
    now.anomalies
}

/// Applies a reading of `memory.events` to `state` and pushes the counters that moved; returns
/// the anomalies found (malformed lines, counters missing).
pub(super) fn apply_memory_reading(
    path: &Path,
    state: &mut CgroupState,
    bytes: &[u8],
    out: &mut Vec<CgroupEvent>,
) -> u64 {
    let parsed = parse_flat_keyed(bytes);
    let change = counter_change(&state.memory, &parsed.values);
    let anomalies = parsed.malformed + change.missing;
    let is_change = change.is_change();
    state.memory = change.totals;
    if is_change {
        out.push(CgroupEvent::Memory {
            path: path.to_path_buf(),
            deltas: change.deltas,
            totals: state.memory.clone(),
            resets: change.resets,
        });
    }
    anomalies
}

/// How a parent's children changed between two listings (path to inode): the removed ones,
/// then the added ones. A name listed again with another inode was removed and created again.
pub(super) fn children_change(
    old: &BTreeMap<PathBuf, u64>,
    fresh: &BTreeMap<PathBuf, u64>,
) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let removed = old
        .iter()
        .filter(|(child, ino)| fresh.get(*child) != Some(*ino))
        .map(|(child, _)| child.clone())
        .collect();
    let added = fresh
        .iter()
        .filter(|(child, ino)| old.get(*child) != Some(*ino))
        .map(|(child, _)| child.clone())
        .collect();
    (removed, added)
}

/// One parsed reading of a flat-keyed file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct FlatKeyed {
    /// `key -> value` for every well-formed line (the first one, if a key repeats).
    pub(super) values: BTreeMap<String, u64>,
    /// Lines skipped: not two fields, not UTF-8, a value that is not decimal digits or does not
    /// fit in a u64, or a key seen before in the same reading.
    pub(super) malformed: u64,
}

/// Parses a flat-keyed file. Never panics; empty lines are ignored, bad ones counted.
pub(super) fn parse_flat_keyed(bytes: &[u8]) -> FlatKeyed {
    let mut reading = FlatKeyed::default();
    for line in bytes.split(|b| *b == b'\n') {
        if line.is_empty() {
            continue;
        }
        let Ok(line) = std::str::from_utf8(line) else {
            reading.malformed += 1;
            continue;
        };
        let mut fields = line.split_ascii_whitespace();
        let (Some(key), Some(value), None) = (fields.next(), fields.next(), fields.next()) else {
            reading.malformed += 1;
            continue;
        };
        // Digits only: `u64::from_str` would also take a leading '+', which the kernel never
        // writes. Too many digits fail the parse (overflow) and are skipped too.
        let value = match value.bytes().all(|b| b.is_ascii_digit()) {
            true => value.parse::<u64>().ok(),
            false => None,
        };
        match value {
            Some(value) if !reading.values.contains_key(key) => {
                reading.values.insert(key.to_owned(), value);
            }
            _ => reading.malformed += 1,
        }
    }
    reading
}

/// The `cgroup.events` state a reading gives, given the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EventsReading {
    /// `populated` now (the last value if the reading lacks it).
    pub(super) populated: bool,
    /// `frozen` now (the last value if the reading lacks it).
    pub(super) frozen: bool,
    /// Anomalies: malformed lines, and `populated` missing (every cgroup v2 kernel writes it;
    /// `frozen` is absent before Linux 5.2 and is not counted).
    pub(super) anomalies: u64,
}

/// Reads `populated` and `frozen` out of a `cgroup.events` reading. A key that is missing or
/// malformed keeps its last value: a bad reading must not report a cgroup emptied or thawed.
pub(super) fn events_reading(last: (bool, bool), reading: &FlatKeyed) -> EventsReading {
    let flag = |key: &str, last: bool| reading.values.get(key).map_or(last, |v| *v != 0);
    let populated_missing = !reading.values.contains_key("populated");
    EventsReading {
        populated: flag("populated", last.0),
        frozen: flag("frozen", last.1),
        anomalies: reading.malformed + u64::from(populated_missing),
    }
}

/// How `memory.events` changed between two readings.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct CounterChange {
    /// How much each counter that moved went up. After a reset, the new value: the counter
    /// started again from zero, so that is how many events it counted since.
    pub(super) deltas: BTreeMap<String, u64>,
    /// Counters lower than in the last reading: the cgroup was created again under the same
    /// path (or the kernel reset them); counted from zero since.
    pub(super) resets: BTreeSet<String>,
    /// Every counter now. A counter of the last reading that this one lacks keeps its last
    /// value, so when it is read again only what it gained since is a delta.
    pub(super) totals: BTreeMap<String, u64>,
    /// Counters of the last reading missing from this one (malformed or absent lines).
    pub(super) missing: u64,
}

impl CounterChange {
    /// Whether anything changed that a consumer should hear about.
    pub(super) fn is_change(&self) -> bool {
        !self.deltas.is_empty() || !self.resets.is_empty()
    }
}

/// Compares a reading of counters with the last one. A counter seen for the first time counts
/// from zero (so a baseline taken "from zero" reports everything already counted).
pub(super) fn counter_change(
    last: &BTreeMap<String, u64>,
    reading: &BTreeMap<String, u64>,
) -> CounterChange {
    let mut change = CounterChange {
        totals: last.clone(),
        ..CounterChange::default()
    };
    for (key, &now) in reading {
        let before = last.get(key).copied();
        match before {
            Some(before) if now < before => {
                change.resets.insert(key.clone());
                if now > 0 {
                    change.deltas.insert(key.clone(), now);
                }
            }
            _ => {
                let gained = now - before.unwrap_or(0);
                if gained > 0 {
                    change.deltas.insert(key.clone(), gained);
                }
            }
        }
        change.totals.insert(key.clone(), now);
    }
    change.missing = last.keys().filter(|k| !reading.contains_key(*k)).count() as u64;
    change
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    /// A real memory.events as Linux 6.x writes it.
    const MEMORY_EVENTS: &[u8] =
        b"low 0\nhigh 12\nmax 40\noom 2\noom_kill 1\noom_group_kill 0\nsock_throttled 0\n";

    #[test]
    fn a_real_memory_events_file_parses_completely() {
        let r = parse_flat_keyed(MEMORY_EVENTS);
        assert_eq!(r.malformed, 0);
        assert_eq!(r.values.len(), 7);
        assert_eq!(r.values["high"], 12);
        assert_eq!(r.values["oom_kill"], 1);
    }

    #[test]
    fn malformed_lines_are_skipped_and_counted() {
        let r = parse_flat_keyed(
            b"low 0\nbroken\nmax x\nhigh 1 2\noom +3\noom_kill -1\n \n\xff\xfe 1\noom_kill 1\n",
        );
        // "broken", "max x", "high 1 2", "oom +3", "oom_kill -1", " ", the non-UTF-8 line.
        assert_eq!(r.malformed, 7);
        assert_eq!(r.values, map(&[("low", 0), ("oom_kill", 1)]));
    }

    #[test]
    fn values_that_overflow_u64_are_malformed_not_wrapped() {
        let r = parse_flat_keyed(b"max 18446744073709551615\noom 18446744073709551616\n");
        assert_eq!(r.values, map(&[("max", u64::MAX)]));
        assert_eq!(r.malformed, 1);
        let r = parse_flat_keyed(b"oom 99999999999999999999999999999999999999\n");
        assert!(r.values.is_empty());
        assert_eq!(r.malformed, 1);
    }

    #[test]
    fn unknown_keys_are_kept_and_tabs_and_missing_final_newline_are_fine() {
        let r = parse_flat_keyed(b"low\t0\nsome_future_counter   7\noom_kill 3");
        assert_eq!(r.malformed, 0);
        assert_eq!(
            r.values,
            map(&[("low", 0), ("some_future_counter", 7), ("oom_kill", 3)])
        );
    }

    #[test]
    fn a_repeated_key_keeps_the_first_value_and_counts_the_repeat() {
        let r = parse_flat_keyed(b"oom_kill 1\noom_kill 5\n");
        assert_eq!(r.values, map(&[("oom_kill", 1)]));
        assert_eq!(r.malformed, 1);
    }

    #[test]
    fn an_empty_file_is_an_empty_reading() {
        assert_eq!(parse_flat_keyed(b""), FlatKeyed::default());
        assert_eq!(parse_flat_keyed(b"\n\n"), FlatKeyed::default());
    }

    #[test]
    fn counters_that_rise_by_more_than_one_between_readings_give_the_whole_rise() {
        let last = map(&[("high", 10), ("max", 3), ("oom_kill", 0)]);
        let c = counter_change(&last, &map(&[("high", 250), ("max", 3), ("oom_kill", 4)]));
        assert_eq!(c.deltas, map(&[("high", 240), ("oom_kill", 4)]));
        assert!(c.resets.is_empty());
        assert_eq!(c.totals, map(&[("high", 250), ("max", 3), ("oom_kill", 4)]));
        assert_eq!(c.missing, 0);
        assert!(c.is_change());
    }

    #[test]
    fn an_unchanged_reading_is_no_change() {
        let last = map(&[("high", 10), ("oom_kill", 1)]);
        let c = counter_change(&last, &last);
        assert!(!c.is_change());
        assert_eq!(c.totals, last);
    }

    #[test]
    fn a_counter_lower_than_before_is_a_reset_counted_from_zero() {
        // The cgroup was created again: its counters started from zero and rose to 2 and 0.
        let last = map(&[("oom", 5), ("oom_kill", 5), ("high", 9)]);
        let c = counter_change(&last, &map(&[("oom", 2), ("oom_kill", 0), ("high", 9)]));
        assert_eq!(c.deltas, map(&[("oom", 2)]));
        assert_eq!(
            c.resets,
            ["oom", "oom_kill"].iter().map(|s| s.to_string()).collect()
        );
        assert_eq!(c.totals, map(&[("oom", 2), ("oom_kill", 0), ("high", 9)]));
        assert!(c.is_change(), "a reset to zero is still reported");
        // And from there on, deltas are against the new values.
        let next = counter_change(&c.totals, &map(&[("oom", 3), ("oom_kill", 1), ("high", 9)]));
        assert_eq!(next.deltas, map(&[("oom", 1), ("oom_kill", 1)]));
        assert!(next.resets.is_empty());
    }

    #[test]
    fn a_missing_counter_keeps_its_value_and_is_not_counted_twice() {
        let last = map(&[("high", 10), ("oom_kill", 3)]);
        // oom_kill is missing (e.g. its line was malformed): no delta, no reset, value kept.
        let c = counter_change(&last, &map(&[("high", 11)]));
        assert_eq!(c.deltas, map(&[("high", 1)]));
        assert!(c.resets.is_empty());
        assert_eq!(c.totals, map(&[("high", 11), ("oom_kill", 3)]));
        assert_eq!(c.missing, 1);
        // When it is read again, only what it gained since the last good reading counts.
        let again = counter_change(&c.totals, &map(&[("high", 11), ("oom_kill", 4)]));
        assert_eq!(again.deltas, map(&[("oom_kill", 1)]));
    }

    #[test]
    fn an_empty_reading_changes_nothing() {
        let last = map(&[("high", 10), ("oom_kill", 3)]);
        let c = counter_change(&last, &parse_flat_keyed(b"").values);
        assert!(!c.is_change());
        assert_eq!(c.totals, last);
        assert_eq!(c.missing, 2);
    }

    #[test]
    fn a_malformed_line_in_a_reading_does_not_lose_or_invent_counts() {
        let last = parse_flat_keyed(MEMORY_EVENTS).values;
        let torn = parse_flat_keyed(b"low 0\nhigh 13\nmax 40\noom 2\noom_kill 1x\n");
        assert_eq!(torn.malformed, 1);
        let c = counter_change(&last, &torn.values);
        assert_eq!(c.deltas, map(&[("high", 1)]));
        assert_eq!(c.totals["oom_kill"], 1);
    }

    #[test]
    fn new_counters_count_from_zero() {
        let c = counter_change(&BTreeMap::new(), &parse_flat_keyed(MEMORY_EVENTS).values);
        assert_eq!(
            c.deltas,
            map(&[("high", 12), ("max", 40), ("oom", 2), ("oom_kill", 1)])
        );
        assert_eq!(c.missing, 0);
    }

    #[test]
    fn cgroup_events_readings_give_populated_and_frozen() {
        let r = events_reading(
            (false, false),
            &parse_flat_keyed(b"populated 1\nfrozen 0\n"),
        );
        assert_eq!((r.populated, r.frozen, r.anomalies), (true, false, 0));
        let r = events_reading((true, false), &parse_flat_keyed(b"populated 0\nfrozen 1\n"));
        assert_eq!((r.populated, r.frozen, r.anomalies), (false, true, 0));
    }

    #[test]
    fn cgroup_events_without_frozen_is_an_older_kernel_not_an_anomaly() {
        let r = events_reading((false, false), &parse_flat_keyed(b"populated 1\n"));
        assert_eq!((r.populated, r.frozen, r.anomalies), (true, false, 0));
    }

    #[test]
    fn a_bad_cgroup_events_reading_keeps_the_last_state() {
        // Missing or malformed `populated` must not report the cgroup emptied.
        for bad in [
            &b""[..],
            b"frozen 1\n",
            b"populated x\nfrozen 1\n",
            b"populated\n",
        ] {
            let r = events_reading((true, true), &parse_flat_keyed(bad));
            assert_eq!((r.populated, r.frozen), (true, true), "{bad:?}");
            assert!(r.anomalies >= 1, "{bad:?}");
        }
        // A good `populated` next to a malformed `frozen`: each key on its own.
        let r = events_reading((false, true), &parse_flat_keyed(b"populated 1\nfrozen ?\n"));
        assert_eq!((r.populated, r.frozen, r.anomalies), (true, true, 1));
    }

    #[test]
    fn a_reading_of_hundreds_of_counters_parses_them_all() {
        let mut text = String::new();
        for i in 0..300 {
            text.push_str(&format!("counter_{i:03} {}\n", 1_000_000 + i));
        }
        let r = parse_flat_keyed(text.as_bytes());
        assert_eq!((r.values.len(), r.malformed), (300, 0));
        assert_eq!(r.values["counter_299"], 1_000_299);
    }

    #[test]
    fn a_child_listed_again_with_another_inode_was_removed_and_added() {
        let old = BTreeMap::from([("/cg/a".into(), 1), ("/cg/b".into(), 2)]);
        let fresh = BTreeMap::from([("/cg/b".into(), 7), ("/cg/c".into(), 3)]);
        let (removed, added) = children_change(&old, &fresh);
        assert_eq!(removed, [PathBuf::from("/cg/a"), "/cg/b".into()]);
        assert_eq!(added, [PathBuf::from("/cg/b"), "/cg/c".into()]);
    }

    #[test]
    fn readings_applied_to_a_state_report_each_change_once() {
        let path = Path::new("/cg/a");
        let mut state = CgroupState::default();
        let mut out = Vec::new();
        let anomalies =
            apply_events_reading(path, &mut state, b"populated 1\nfrozen 0\n", &mut out);
        assert_eq!(anomalies, 0);
        assert_eq!(
            out,
            [CgroupEvent::Populated {
                path: path.into(),
                populated: true
            }]
        );
        out.clear();
        apply_events_reading(path, &mut state, b"populated 1\nfrozen 0\n", &mut out);
        assert!(out.is_empty(), "an unchanged reading reports nothing");
        let anomalies = apply_memory_reading(path, &mut state, b"high 2\noom_kill x\n", &mut out);
        assert_eq!(anomalies, 1);
        let [CgroupEvent::Memory { deltas, totals, .. }] = &out[..] else {
            panic!("one memory event: {out:?}");
        };
        assert_eq!(
            (deltas, totals),
            (&map(&[("high", 2)]), &map(&[("high", 2)]))
        );
        assert_eq!(state.memory, map(&[("high", 2)]));
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let r = parse_flat_keyed(&bytes);
            let lines = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() as u64;
            prop_assert_eq!(r.values.len() as u64 + r.malformed, lines);
        }

        /// Lines built from known parts parse to what a simple model of the format expects.
        #[test]
        fn generated_lines_parse_as_the_model_expects(
            lines in proptest::collection::vec(
                (0usize..6, prop_oneof![
                    any::<u64>().prop_map(|v| v.to_string()),
                    Just("18446744073709551616".to_string()),
                    Just("-1".to_string()),
                    Just("+1".to_string()),
                    Just("1x".to_string()),
                    Just(String::new()),
                ], prop_oneof![Just(" "), Just("\t"), Just("  ")]),
                0..24,
            )
        ) {
            const KEYS: [&str; 6] = ["low", "high", "max", "oom", "oom_kill", "populated"];
            let mut text = String::new();
            let mut expect = BTreeMap::new();
            let mut malformed = 0u64;
            for (key, value, sep) in &lines {
                text.push_str(&format!("{}{sep}{value}\n", KEYS[*key]));
                match value.parse::<u64>() {
                    Ok(v) if !value.starts_with('+') && !expect.contains_key(KEYS[*key]) => {
                        expect.insert(KEYS[*key].to_string(), v);
                    }
                    _ => malformed += 1,
                }
            }
            let r = parse_flat_keyed(text.as_bytes());
            prop_assert_eq!(r.values, expect);
            prop_assert_eq!(r.malformed, malformed);
        }

        /// Over any sequence of readings of a monotonic counter, some of which lose its line,
        /// the deltas add up to exactly what the kernel counted: a gap neither loses counts nor
        /// counts them twice.
        #[test]
        fn deltas_add_up_to_the_count_across_readings_that_lose_the_line(
            steps in proptest::collection::vec((0u64..1000, any::<bool>()), 1..40)
        ) {
            let mut kernel = 0u64;
            let mut reported = 0u64;
            let mut last = BTreeMap::new();
            for (gain, line_lost) in steps {
                kernel += gain;
                let text = if line_lost {
                    "high 1\noom_kill 1x\n".to_string()
                } else {
                    format!("high 1\noom_kill {kernel}\n")
                };
                let change = counter_change(&last, &parse_flat_keyed(text.as_bytes()).values);
                prop_assert!(change.resets.is_empty());
                reported += change.deltas.get("oom_kill").copied().unwrap_or(0);
                last = change.totals;
            }
            let seen = last.get("oom_kill").copied().unwrap_or(0);
            prop_assert_eq!(reported, seen, "every count up to the last good reading");
        }

        /// With the cgroup created again between readings (counters back to zero), counts are
        /// never invented: the deltas add up to at most what was counted, and exactly that when
        /// each new life is read before it passes the old total.
        #[test]
        fn resets_never_invent_counts(
            steps in proptest::collection::vec((0u64..1000, any::<bool>()), 1..40)
        ) {
            let mut kernel = 0u64;
            let mut counted = 0u64;
            let mut reported = 0u64;
            let mut exact = true;
            let mut last = BTreeMap::new();
            for (gain, recreated) in steps {
                let before = last.get("oom_kill").copied();
                if recreated {
                    kernel = 0;
                }
                kernel += gain;
                counted += gain;
                if recreated && before.is_some_and(|b| kernel >= b) {
                    exact = false; // looks like an ordinary rise: undetectable
                }
                let text = format!("oom_kill {kernel}\n");
                let change = counter_change(&last, &parse_flat_keyed(text.as_bytes()).values);
                reported += change.deltas.get("oom_kill").copied().unwrap_or(0);
                last = change.totals;
            }
            prop_assert!(reported <= counted);
            if exact {
                prop_assert_eq!(reported, counted);
            }
        }
    }
}
