//! Latency and error tallies, and the printed report.

use std::collections::BTreeMap;
use std::time::Duration;

/// Latencies and errors of one caller.
#[derive(Default)]
pub struct Tally {
    pub latencies: Vec<Duration>,
    pub errors: BTreeMap<String, u64>,
}

impl Tally {
    pub fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn report(name: &str, mut tally: Tally, elapsed: Duration) {
    tally.latencies.sort();
    let ok = tally.latencies.len();
    let errors: u64 = tally.errors.values().sum();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("{name}: {ok} ok, {errors} errors in {:.1} s", elapsed.as_secs_f64());
    println!("  throughput  {:.0} req/s", ok as f64 / elapsed.as_secs_f64());
    println!(
        "  latency ms  p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
        ms(percentile(&tally.latencies, 50.0)),
        ms(percentile(&tally.latencies, 95.0)),
        ms(percentile(&tally.latencies, 99.0)),
        ms(tally.latencies.last().copied().unwrap_or_default())
    );
    for (code, n) in &tally.errors {
        println!("  error {code}: {n}");
    }
}
