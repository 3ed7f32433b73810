//! Retention policies as Proxmox Backup Server applies them (`keep-last`, then
//! `keep-hourly`, `-daily`, `-weekly`, `-monthly`, `-yearly`): newest first, each rule
//! keeps the newest snapshot of each of its N most recent periods that no earlier rule
//! already covers, and whatever no rule keeps goes. Periods are in UTC; weeks start on
//! Monday (ISO 8601).

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// A retention policy: how many of each kind to keep (`[pools.NAME.retention]`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The N newest.
    pub keep_last: Option<usize>,
    /// The newest of each of the last N hours.
    pub keep_hourly: Option<usize>,
    /// The newest of each of the last N days.
    pub keep_daily: Option<usize>,
    /// The newest of each of the last N weeks.
    pub keep_weekly: Option<usize>,
    /// The newest of each of the last N months.
    pub keep_monthly: Option<usize>,
    /// The newest of each of the last N years.
    pub keep_yearly: Option<usize>,
}

impl Policy {
    /// Whether it keeps nothing: no rule set.
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// A periodic rule: how many periods to keep, its name, and the period of a time (Unix
/// seconds).
type Rule = (Option<usize>, &'static str, fn(u64) -> i64);

/// Why a snapshot stays or goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Kept, by the rule named (`last`, `daily`...).
    Keep(&'static str),
    /// No rule keeps it.
    Remove,
}

/// Decides for `snapshots` (creation times, Unix ms, in any order): the verdict for
/// each, by index.
pub fn decide(policy: &Policy, created_ms: &[u64]) -> Vec<Verdict> {
    let mut order: Vec<usize> = (0..created_ms.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(created_ms[i]));
    let mut marks: BTreeMap<usize, Verdict> = BTreeMap::new();
    if let Some(n) = policy.keep_last {
        for &i in order.iter().take(n) {
            marks.insert(i, Verdict::Keep("keep-last"));
        }
    }
    let rules: [Rule; 5] = [
        (policy.keep_hourly, "keep-hourly", |s| (s / 3600) as i64),
        (policy.keep_daily, "keep-daily", |s| (s / 86400) as i64),
        (policy.keep_weekly, "keep-weekly", |s| {
            // 1970-01-01 was a Thursday: shifting by 3 days makes weeks start on Monday.
            ((s / 86400) as i64 + 3).div_euclid(7)
        }),
        (policy.keep_monthly, "keep-monthly", |s| {
            let (y, m, _) = crate::clock::civil((s / 86400) as i64);
            y * 12 + i64::from(m)
        }),
        (policy.keep_yearly, "keep-yearly", |s| {
            crate::clock::civil((s / 86400) as i64).0
        }),
    ];
    for (keep, name, period) in rules {
        let Some(keep) = keep else { continue };
        let of = |i: usize| period(created_ms[i] / 1000);
        // Periods a snapshot kept so far already stands for.
        let covered: BTreeSet<i64> = order
            .iter()
            .filter(|i| matches!(marks.get(i), Some(Verdict::Keep(_))))
            .map(|&i| of(i))
            .collect();
        let mut chosen = BTreeSet::new();
        for &i in &order {
            if marks.contains_key(&i) {
                continue;
            }
            let p = of(i);
            if covered.contains(&p) {
                continue;
            }
            if !chosen.contains(&p) {
                if chosen.len() >= keep {
                    break;
                }
                chosen.insert(p);
                marks.insert(i, Verdict::Keep(name));
            } else {
                marks.insert(i, Verdict::Remove);
            }
        }
    }
    (0..created_ms.len())
        .map(|i| marks.remove(&i).unwrap_or(Verdict::Remove))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600 * 1000;
    const D: u64 = 24 * H;

    #[test]
    fn keep_last_keeps_the_newest() {
        let p = Policy {
            keep_last: Some(2),
            ..Policy::default()
        };
        let v = decide(&p, &[3 * H, H, 2 * H, 4 * H]);
        assert_eq!(
            v,
            [
                Verdict::Keep("keep-last"),
                Verdict::Remove,
                Verdict::Remove,
                Verdict::Keep("keep-last")
            ]
        );
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_not_already_covered() {
        // Day 10: 08:00 and 20:00; day 11: 09:00; day 12: 07:00 and 23:00.
        let t = [
            10 * D + 8 * H,
            10 * D + 20 * H,
            11 * D + 9 * H,
            12 * D + 7 * H,
            12 * D + 23 * H,
        ];
        let p = Policy {
            keep_last: Some(1),
            keep_daily: Some(2),
            ..Policy::default()
        };
        // keep-last takes day 12's 23:00, which covers day 12; daily then takes the
        // newest of days 11 and 10.
        assert_eq!(
            decide(&p, &t),
            [
                Verdict::Remove,
                Verdict::Keep("keep-daily"),
                Verdict::Keep("keep-daily"),
                Verdict::Remove,
                Verdict::Keep("keep-last"),
            ]
        );
    }

    #[test]
    fn weeks_start_on_monday() {
        // 2026-11-22 is a Sunday, 2026-11-23 a Monday (`date -d`).
        let sunday = 1_795_305_600_000u64 + 12 * H;
        let monday = sunday + D;
        let p = Policy {
            keep_weekly: Some(5),
            ..Policy::default()
        };
        assert_eq!(
            decide(&p, &[sunday, monday]),
            [Verdict::Keep("keep-weekly"), Verdict::Keep("keep-weekly")]
        );
        let tuesday = monday + D;
        assert_eq!(
            decide(&p, &[monday, tuesday]),
            [Verdict::Remove, Verdict::Keep("keep-weekly")]
        );
    }
}
