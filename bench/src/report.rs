//! The figures of one run: what each scenario measured, the targets checked against them, and their rendering as
//! JSON (for machines) and Markdown (for docs/performance.md).

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.50),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// CPU spent by the processes involved, over a measurement window.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Cpu {
    /// Cores' worth of CPU the server under test used (1.0 = one core busy the whole window).
    pub server_cores: f64,
    /// The same for the harness (load generator and browsers).
    pub harness_cores: f64,
    /// The same for the mock provider, where one was involved.
    pub provider_cores: f64,
    /// The server's CPU time per request or per flow, in microseconds.
    pub server_us_per_op: f64,
}

impl Cpu {
    pub fn new(server: Duration, harness: Duration, provider: Duration, window: Duration, ops: u64) -> Self {
        let secs = window.as_secs_f64().max(1e-9);
        Self {
            server_cores: server.as_secs_f64() / secs,
            harness_cores: harness.as_secs_f64() / secs,
            provider_cores: provider.as_secs_f64() / secs,
            server_us_per_op: if ops == 0 { 0.0 } else { server.as_secs_f64() * 1e6 / ops as f64 },
        }
    }
}

/// A scenario of single requests (the ceiling, failure pages, `/healthz`).
#[derive(Debug, Clone, Serialize)]
pub struct Requests {
    pub name: String,
    pub load: String,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub per_second: f64,
    pub latency: Percentiles,
    pub mean_body_bytes: u64,
    pub cpu: Cpu,
    pub peak_rss_kib: u64,
    pub ratio_to_ceiling: Option<f64>,
}

/// A scenario of complete flows.
#[derive(Debug, Clone, Serialize)]
pub struct Flows {
    pub name: String,
    pub load: String,
    /// Simulated browsers running flows at once (closed loop), or the cap on them (open loop).
    pub browsers: usize,
    pub offered_per_second: Option<f64>,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub flows_per_second: f64,
    /// From the link request to the result page (open loop: from the flow's scheduled start).
    pub flow: Percentiles,
    pub link: Percentiles,
    pub start: Percentiles,
    pub authorize: Percentiles,
    pub callback: Percentiles,
    pub result: Percentiles,
    /// Time the provider's token endpoint took, measured inside the provider.
    pub token: Percentiles,
    /// Callback latency minus the token endpoint's time: what callback-gate adds.
    pub added: Percentiles,
    /// Requests per second callback-gate answered (4 per flow: link, start, callback, result).
    pub gate_requests_per_second: f64,
    pub cpu: Cpu,
    pub peak_rss_kib: u64,
    pub ratio_to_ceiling: Option<f64>,
}

/// The slow provider: many callbacks waiting on the token endpoint while other requests are measured.
#[derive(Debug, Clone, Serialize)]
pub struct Slow {
    pub token_delay_ms: u64,
    pub browsers: usize,
    pub prepared_flows: u64,
    pub prepare_seconds: f64,
    /// Callbacks waiting on the token endpoint, sampled every 100 ms over the window.
    pub in_flight_min: u64,
    pub in_flight_mean: f64,
    pub in_flight_max: u64,
    pub flows: Flows,
    pub failure_pages: Requests,
    pub healthz: Requests,
    pub peak_rss_kib: u64,
    pub max_rss_during_window_kib: u64,
}

/// Memory with many idle keep-alive connections.
#[derive(Debug, Clone, Serialize)]
pub struct Idle {
    pub connections: usize,
    pub answered: usize,
    pub rss_before_kib: u64,
    pub rss_with_idle_kib: u64,
    pub peak_rss_kib: u64,
    /// The ceiling server with as many idle connections: what axum and hyper themselves cost.
    pub ceiling_rss_before_kib: u64,
    pub ceiling_rss_with_idle_kib: u64,
}

/// Start-up to ready.
#[derive(Debug, Clone, Serialize)]
pub struct Startup {
    pub database_bytes: u64,
    pub database_flows: u64,
    pub runs_ms: Vec<f64>,
    pub median_ms: f64,
    pub max_ms: f64,
    /// Start-ups of the scenarios' own fresh databases (created and migrated), for comparison.
    pub fresh_database_median_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub target: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: String,
    pub machine: String,
    pub load_average_at_start: String,
    pub load_average_at_end: String,
    /// The store callback-gate ran on: `SQLite` or `PostgreSQL`.
    pub backend: String,
    /// The store in one line: for PostgreSQL, the server's version and durability settings.
    pub store: String,
    pub commit: String,
    pub gate_binary: String,
    pub command: String,
    pub wall_seconds: f64,
    pub window_seconds: f64,
    pub ceiling: Requests,
    /// The ceiling doing the least any failure page must do: its size of page and one log line.
    pub floor: Requests,
    pub failure_pages: Requests,
    pub flows_at_rate: Flows,
    pub concurrency: Vec<Flows>,
    /// The same closed loop at 10 browsers on the flow floor (`crate::flow_floor`): the same requests answered from
    /// memory, what the machine, the harness and the provider cost a flow before any service does real work.
    pub flow_floor: Flows,
    pub max_flows_per_second: f64,
    pub slow: Slow,
    pub idle: Idle,
    pub startup: Startup,
    pub targets: Vec<Check>,
}

pub fn time(us: u64) -> String {
    let us = us as f64;
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 10_000.0 {
        format!("{:.0} ms", us / 1e3)
    } else {
        format!("{:.2} ms", us / 1e3)
    }
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 / 1024.0)
}

fn ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "—".into(), |r| format!("{:.0}%", r * 100.0))
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(w, "Mode: **{}**. Machine: {}.", self.mode, self.machine);
        let _ = writeln!(
            w,
            "Load average at start: {} (at end: {}). callback-gate commit {} ({}). Window per scenario: {:.0} s after warm-up. Wall time: {:.0} s.",
            self.load_average_at_start,
            self.load_average_at_end,
            self.commit,
            self.gate_binary,
            self.window_seconds,
            self.wall_seconds
        );
        let _ = writeln!(w, "Store: **{}** ({}).", self.backend, self.store);
        let _ = writeln!(w, "\nCommand: `{}`\n", self.command);

        let _ = writeln!(w, "### Figures\n");
        let _ = writeln!(
            w,
            "| Scenario | Load | Rate | p50 | p99 | p99.9 | Added p99 | Peak RSS | Server CPU per op | CPU used (server + harness) | Ratio to ceiling | Errors |"
        );
        let _ = writeln!(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let mut requests_row = |r: &Requests| {
            let _ = writeln!(
                w,
                "| {} | {} | {:.0} req/s | {} | {} | {} | — | {} | {:.0} µs | {:.2} + {:.2} cores | {} | {} |",
                r.name,
                r.load,
                r.per_second,
                time(r.latency.p50_us),
                time(r.latency.p99_us),
                time(r.latency.p999_us),
                mib(r.peak_rss_kib),
                r.cpu.server_us_per_op,
                r.cpu.server_cores,
                r.cpu.harness_cores,
                ratio(r.ratio_to_ceiling),
                r.errors
            );
        };
        requests_row(&self.ceiling);
        requests_row(&self.floor);
        requests_row(&self.failure_pages);
        let flows_row = |w: &mut String, f: &Flows| {
            let _ = writeln!(
                w,
                "| {} | {} | {:.0} flows/s | {} | {} | {} | {} | {} | {:.0} µs/flow | {:.2} + {:.2} cores | {} | {} |",
                f.name,
                f.load,
                f.flows_per_second,
                time(f.flow.p50_us),
                time(f.flow.p99_us),
                time(f.flow.p999_us),
                time(f.added.p99_us),
                mib(f.peak_rss_kib),
                f.cpu.server_us_per_op,
                f.cpu.server_cores,
                f.cpu.harness_cores,
                ratio(f.ratio_to_ceiling),
                f.errors
            );
        };
        flows_row(w, &self.flows_at_rate);
        if let Some(best) = self
            .concurrency
            .iter()
            .filter(|f| f.errors == 0)
            .max_by(|a, b| a.flows_per_second.total_cmp(&b.flows_per_second))
        {
            let mut best = best.clone();
            best.name = "Complete flows, maximum".into();
            flows_row(w, &best);
        }
        let slow = &self.slow;
        let _ = writeln!(
            w,
            "| Slow provider: callbacks ({} in flight, token endpoint {} ms) | {} | {:.0} flows/s | {} | {} | {} | {} | {} | {:.0} µs/flow | {:.2} + {:.2} cores | — | {} |",
            slow.in_flight_mean.round(),
            slow.token_delay_ms,
            slow.flows.load,
            slow.flows.flows_per_second,
            time(slow.flows.callback.p50_us),
            time(slow.flows.callback.p99_us),
            time(slow.flows.callback.p999_us),
            time(slow.flows.added.p99_us),
            mib(slow.peak_rss_kib),
            slow.flows.cpu.server_us_per_op,
            slow.flows.cpu.server_cores,
            slow.flows.cpu.harness_cores,
            slow.flows.errors
        );
        let mut w2 = String::new();
        for r in [&slow.failure_pages, &slow.healthz] {
            let _ = writeln!(
                w2,
                "| {} | {} | {:.0} req/s | {} | {} | {} | — | {} | — | — | — | {} |",
                r.name,
                r.load,
                r.per_second,
                time(r.latency.p50_us),
                time(r.latency.p99_us),
                time(r.latency.p999_us),
                mib(slow.peak_rss_kib),
                r.errors
            );
        }
        w.push_str(&w2);
        let idle = &self.idle;
        let _ = writeln!(
            w,
            "| {} idle keep-alive connections | one `/healthz` each, then idle | — | — | — | — | — | {} now ({} before; ceiling server: {}, {} before) | — | — | — | {} |",
            idle.connections,
            mib(idle.rss_with_idle_kib),
            mib(idle.rss_before_kib),
            mib(idle.ceiling_rss_with_idle_kib),
            mib(idle.ceiling_rss_before_kib),
            idle.connections - idle.answered
        );
        let startup = &self.startup;
        let _ = writeln!(
            w,
            "| Start-up to ready, existing {} database ({:.1} MB, {} flows) | spawn to first 200 from `/readyz`, {} runs | — | {:.1} ms | max {:.1} ms | — | — | — | — | — | — | — |",
            self.backend,
            startup.database_bytes as f64 / 1024.0 / 1024.0,
            startup.database_flows,
            startup.runs_ms.len(),
            startup.median_ms,
            startup.max_ms
        );

        let _ = writeln!(w, "\n### Cost as concurrency grows (closed loop, each browser runs flows back to back)\n");
        let _ = writeln!(
            w,
            "| Browsers | Flows/s | Flow p50 | Flow p99 | Callback p99 | Added p50 | Added p99 | Server CPU per flow | CPU used (server + harness + provider) | Peak RSS | Errors |"
        );
        let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (f, floor) in self.concurrency.iter().map(|f| (f, false)).chain(std::iter::once((&self.flow_floor, true))) {
            let browsers = if floor { format!("*flow floor*: {}", f.browsers) } else { f.browsers.to_string() };
            let _ = writeln!(
                w,
                "| {} | {:.0} | {} | {} | {} | {} | {} | {:.0} µs | {:.2} + {:.2} + {:.2} cores | {} | {} |",
                browsers,
                f.flows_per_second,
                time(f.flow.p50_us),
                time(f.flow.p99_us),
                time(f.callback.p99_us),
                time(f.added.p50_us),
                time(f.added.p99_us),
                f.cpu.server_us_per_op,
                f.cpu.server_cores,
                f.cpu.harness_cores,
                f.cpu.provider_cores,
                mib(f.peak_rss_kib),
                f.errors
            );
        }

        let _ = writeln!(w, "\n### Steps of a flow at {} (p50 / p99)\n", self.flows_at_rate.name.to_lowercase());
        let _ = writeln!(
            w,
            "| API link | start | provider authorize | callback (with token exchange) | token endpoint | result page |"
        );
        let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|");
        let f = &self.flows_at_rate;
        let pair = |p: &Percentiles| format!("{} / {}", time(p.p50_us), time(p.p99_us));
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            pair(&f.link),
            pair(&f.start),
            pair(&f.authorize),
            pair(&f.callback),
            pair(&f.token),
            pair(&f.result)
        );

        let _ = writeln!(w, "\n### Targets\n");
        let _ = writeln!(w, "| Target | Measured | Met |");
        let _ = writeln!(w, "|---|---|---|");
        for check in &self.targets {
            let _ = writeln!(
                w,
                "| {} | {} | {} |",
                check.target,
                check.measured,
                if check.met { "met" } else { "**missed**" }
            );
        }
        let errors: Vec<String> = self.error_lines();
        if !errors.is_empty() {
            let _ = writeln!(w, "\n### Errors seen\n");
            for line in errors {
                let _ = writeln!(w, "- {line}");
            }
        }
        out
    }

    /// One line per scenario that saw errors, with the first error.
    pub fn error_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut add = |name: &str, errors: u64, first: &Option<String>| {
            if errors > 0 {
                lines.push(format!("{name}: {errors} errors, first: {}", first.as_deref().unwrap_or("?")));
            }
        };
        for r in [&self.ceiling, &self.floor, &self.failure_pages, &self.slow.failure_pages, &self.slow.healthz] {
            add(&r.name, r.errors, &r.first_error);
        }
        for f in
            std::iter::once(&self.flows_at_rate).chain(&self.concurrency).chain([&self.flow_floor, &self.slow.flows])
        {
            add(&format!("{} ({})", f.name, f.load), f.errors, &f.first_error);
        }
        if self.idle.answered < self.idle.connections {
            lines.push(format!("idle connections: {} of {} answered", self.idle.answered, self.idle.connections));
        }
        lines
    }

    /// Whether every scenario did real work without errors: what the smoke run asserts (no timings).
    pub fn works(&self) -> Result<(), String> {
        let mut problems = self.error_lines();
        let empty = [
            ("ceiling", self.ceiling.ok),
            ("floor", self.floor.ok),
            ("failure pages", self.failure_pages.ok),
            ("flows at a fixed rate", self.flows_at_rate.ok),
            ("flows on the flow floor", self.flow_floor.ok),
            ("slow provider flows", self.slow.flows.ok),
            ("slow provider failure pages", self.slow.failure_pages.ok),
            ("slow provider healthz", self.slow.healthz.ok),
        ];
        for (name, ok) in empty {
            if ok == 0 {
                problems.push(format!("{name}: nothing completed"));
            }
        }
        if self.concurrency.iter().any(|f| f.ok == 0) {
            problems.push("a concurrency level completed no flow".into());
        }
        if self.slow.flows.added.count == 0 || self.flows_at_rate.added.count == 0 {
            problems.push("no token endpoint time was matched to a callback".into());
        }
        if self.startup.runs_ms.is_empty() {
            problems.push("start-up was not measured".into());
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
    }
}
