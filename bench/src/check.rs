//! `--check`: whether a run met issue 17's delivery targets, so anyone can re-verify them
//! on their own machine. Target 2 (one message per position): everything delivered, p99
//! within 10 ms, and at least twice the MQTT reference's deliveries per server
//! CPU-second in the same run. Target 3 (`--batch-ms`): on `fanout`, a million positions
//! per server CPU-second with p99 within the window + 10 ms; on `fanout-large`, 99 % of
//! positions with p99 within 250 ms.

use crate::Preset;
use crate::measure::Report;

/// The figures of a run the targets are about.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub preset: Preset,
    pub batch_ms: u64,
    pub delivery_ratio: f64,
    pub p99_ms: f64,
    /// Deliveries (positions) per server CPU-second.
    pub per_cpu: f64,
    /// The MQTT reference's, from the same run.
    pub mqtt_per_cpu: Option<f64>,
}

impl Figures {
    pub fn of(convoy: &Report, mqtt: Option<&Report>) -> Self {
        Self {
            preset: convoy.plan.preset,
            batch_ms: convoy.plan.batch_ms,
            delivery_ratio: convoy.delivery_ratio,
            p99_ms: convoy.latency_us.p99 as f64 / 1000.0,
            per_cpu: convoy.deliveries_per_server_cpu_second.unwrap_or(0.0),
            mqtt_per_cpu: mqtt.and_then(|m| m.deliveries_per_server_cpu_second),
        }
    }
}

/// What fell short, each naming its target; empty when the run met them.
pub fn shortfalls(run: Figures) -> Vec<String> {
    let Figures { preset, batch_ms, delivery_ratio, p99_ms, per_cpu, mqtt_per_cpu } = run;
    let mut short = Vec::new();
    let mut need = |met: bool, what: String| {
        if !met {
            short.push(what);
        }
    };
    match (preset, batch_ms) {
        (Preset::Fanout | Preset::FanoutLarge, 0) => {
            need(
                delivery_ratio >= 1.0,
                format!("target 2: {:.4} % delivered, not 100 %", delivery_ratio * 100.0),
            );
            need(p99_ms <= 10.0, format!("target 2: p99 {p99_ms:.2} ms, over 10 ms"));
            match mqtt_per_cpu {
                Some(reference) => need(
                    per_cpu >= 2.0 * reference,
                    format!(
                        "target 2: {per_cpu:.0} deliveries per server CPU-second, {:.2} x the MQTT reference's {reference:.0}, under 2 x",
                        per_cpu / reference
                    ),
                ),
                None => need(false, "target 2: no MQTT reference to compare with (run with --mqtt)".into()),
            }
        }
        (Preset::Fanout, window) => {
            need(
                per_cpu >= 1_000_000.0,
                format!("target 3: {per_cpu:.0} positions per server CPU-second, under 1,000,000"),
            );
            let allowed = window as f64 + 10.0;
            need(
                p99_ms <= allowed,
                format!("target 3: p99 {p99_ms:.2} ms, over the window + 10 ms ({allowed} ms)"),
            );
        }
        (Preset::FanoutLarge, _) => {
            need(
                delivery_ratio >= 0.99,
                format!("target 3: {:.2} % delivered, under 99 %", delivery_ratio * 100.0),
            );
            need(p99_ms <= 250.0, format!("target 3: p99 {p99_ms:.2} ms, over 250 ms"));
        }
        (preset, _) => {
            need(false, format!("--check has targets for fanout and fanout-large, not {preset:?}"))
        }
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(preset: Preset, batch_ms: u64, per_cpu: f64, p99_ms: f64) -> Figures {
        Figures { preset, batch_ms, delivery_ratio: 1.0, p99_ms, per_cpu, mqtt_per_cpu: Some(150_000.0) }
    }

    #[test]
    fn names_each_target_a_run_falls_short_of() {
        assert!(shortfalls(run(Preset::Fanout, 0, 300_000.0, 3.0)).is_empty());
        let short = shortfalls(run(Preset::Fanout, 0, 200_000.0, 12.0));
        assert_eq!(short.len(), 2, "{short:?}");
        assert!(short.iter().all(|s| s.starts_with("target 2")), "{short:?}");
        let alone = Figures { mqtt_per_cpu: None, ..run(Preset::Fanout, 0, 300_000.0, 3.0) };
        assert!(shortfalls(alone)[0].contains("--mqtt"));

        assert!(shortfalls(run(Preset::Fanout, 100, 1_000_000.0, 110.0)).is_empty());
        let short = shortfalls(run(Preset::Fanout, 100, 900_000.0, 111.0));
        assert_eq!(short.len(), 2, "{short:?}");
        assert!(short[0].contains("1,000,000") && short[1].contains("110 ms"), "{short:?}");

        assert!(shortfalls(run(Preset::FanoutLarge, 100, 1.0, 250.0)).is_empty());
        let lossy = Figures { delivery_ratio: 0.98, ..run(Preset::FanoutLarge, 100, 1.0, 300.0) };
        assert_eq!(shortfalls(lossy).len(), 2);
        assert!(!shortfalls(run(Preset::Idle, 0, 0.0, 0.0)).is_empty());
    }
}
