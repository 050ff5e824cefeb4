//! The scenarios of one run, in order: the ceiling, failure pages, complete flows at a fixed rate, complete flows
//! as concurrency grows, the slow provider, idle keep-alive connections, and start-up with an existing database.
//! Each scenario gets a fresh callback-gate process (so its peak RSS is its own) and a fresh database: a SQLite file,
//! or a PostgreSQL database created for it (`--database-url-admin`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hyper::StatusCode;
use tokio::sync::Semaphore;

use crate::browser::{self, Browser, FlowError, FlowTimes, Target};
use crate::load::{self, Measured, Plan, histogram, micros};
use crate::process::{self, CpuMeter};
use crate::report::{self, Check, Cpu, Flows, Idle, Percentiles, Report, Requests, Slow, Startup};
use crate::servers::{self, Backend, Gate, GateSetup, Server};

/// How hard and how long each scenario runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub smoke: bool,
    pub warmup: Duration,
    pub window: Duration,
    /// Keep-alive connections of the closed-loop request load (ceiling and failure pages).
    pub connections: usize,
    /// Offered rate of the fixed-rate flow scenario, flows per second.
    pub flow_rate: f64,
    /// Browsers in flight at most in the fixed-rate scenario; arrivals beyond are counted as shed.
    pub flow_cap: usize,
    /// Concurrent browsers of the closed-loop flow scenarios.
    pub sweep: Vec<usize>,
    pub slow_browsers: usize,
    pub slow_delay: Duration,
    pub slow_failure_rate: f64,
    pub slow_health_rate: f64,
    pub idle_connections: usize,
    pub startup_runs: usize,
}

/// Failure-page targets, per the issue.
const FAILURE_RATIO_TARGET: f64 = 0.5;
const ADDED_P99_TARGET_US: u64 = 2_000;
const FLOW_RATE_TARGET: f64 = 500.0;
/// The concurrency at which the callback's added latency has its own target, and the flow floor is measured.
const CALLBACK_TARGET_BROWSERS: usize = 10;
const SLOW_FAILURE_P99_TARGET_US: u64 = 5_000;
const SLOW_RSS_TARGET_KIB: u64 = 64 * 1024;
const IDLE_RSS_TARGET_KIB: u64 = 32 * 1024;
const STARTUP_TARGET_MS: f64 = 100.0;

pub struct Bench {
    pub settings: Settings,
    pub gate_binary: PathBuf,
    pub out: PathBuf,
    pub backend: Backend,
    /// Every fresh-database start-up seen, for comparison with the existing-database ones.
    fresh_startups: Mutex<Vec<Duration>>,
}

fn log(message: impl AsRef<str>) {
    eprintln!("[bench] {}", message.as_ref());
}

/// Sets a request scenario's ratio to the ceiling and logs its rate beside it.
fn compare_to_ceiling(name: &str, requests: &mut Requests, ceiling: &Requests) {
    let ratio = requests.per_second / ceiling.per_second.max(1e-9);
    requests.ratio_to_ceiling = Some(ratio);
    log(format!(
        "{name}: {:.0} req/s ({:.0}% of the ceiling), p99 {}",
        requests.per_second,
        ratio * 100.0,
        report::time(requests.latency.p99_us)
    ));
}

impl Bench {
    pub fn new(settings: Settings, gate_binary: PathBuf, out: PathBuf, backend: Backend) -> Self {
        Self { settings, gate_binary, out, backend, fresh_startups: Mutex::new(Vec::new()) }
    }

    pub async fn run(&self, header: ReportHeader) -> Result<Report, String> {
        let began = Instant::now();
        let load_at_start = process::load_average();
        log(format!("load average at start: {load_at_start}"));
        let store = self.backend.describe();
        log(format!("store: {store}"));

        let ceiling = self.ceiling().await?;
        log(format!("ceiling: {:.0} req/s, p99 {}", ceiling.per_second, report::time(ceiling.latency.p99_us)));
        let mut floor = self.floor().await?;
        compare_to_ceiling("floor", &mut floor, &ceiling);

        let fast = servers::spawn_role(&["provider", "--token-delay-ms", "0"]).await?;
        let mut failure_pages = self.failure_pages(&fast).await?;
        compare_to_ceiling("failure pages", &mut failure_pages, &ceiling);

        let mut flows_at_rate = self.flows_at_rate(&fast).await?;
        flows_at_rate.ratio_to_ceiling = Some(flows_at_rate.gate_requests_per_second / ceiling.per_second.max(1e-9));
        log(format!(
            "flows at {:.0}/s: {:.0} flows/s, flow p99 {}, added p99 {}",
            self.settings.flow_rate,
            flows_at_rate.flows_per_second,
            report::time(flows_at_rate.flow.p99_us),
            report::time(flows_at_rate.added.p99_us)
        ));

        let mut concurrency = Vec::new();
        let mut flow_floor = None;
        for &browsers in &self.settings.sweep {
            let mut flows = self.flows_closed(&fast, browsers, None).await?;
            flows.ratio_to_ceiling = Some(flows.gate_requests_per_second / ceiling.per_second.max(1e-9));
            log(format!(
                "{browsers} browsers: {:.0} flows/s, flow p99 {}, added p99 {}",
                flows.flows_per_second,
                report::time(flows.flow.p99_us),
                report::time(flows.added.p99_us)
            ));
            concurrency.push(flows);
            // The floor is measured right after the row it is compared with, in the same minute of the host.
            if browsers == CALLBACK_TARGET_BROWSERS && flow_floor.is_none() {
                flow_floor = Some(self.flow_floor_row(&fast).await?);
            }
        }
        let max_flows_per_second =
            concurrency.iter().filter(|f| f.errors == 0).map(|f| f.flows_per_second).fold(0.0, f64::max);
        let flow_floor = match flow_floor {
            Some(floor) => floor,
            None => self.flow_floor_row(&fast).await?,
        };
        fast.stop().await;

        let (slow, slow_setup) = self.slow_provider().await?;
        log(format!(
            "slow provider: {:.0} callbacks in flight, failure p99 {}, healthz p99 {}, peak RSS {}",
            slow.in_flight_mean,
            report::time(slow.failure_pages.latency.p99_us),
            report::time(slow.healthz.latency.p99_us),
            report::mib(slow.peak_rss_kib)
        ));

        let idle = self.idle(&slow_setup).await?;
        log(format!("{} idle connections: RSS {}", idle.connections, report::mib(idle.rss_with_idle_kib)));

        let startup = self.startup(&slow_setup, slow.prepared_flows).await?;
        log(format!(
            "start-up with an existing database: median {:.1} ms, max {:.1} ms",
            startup.median_ms, startup.max_ms
        ));

        let mut report = Report {
            mode: header.mode,
            machine: process::machine(),
            load_average_at_start: load_at_start,
            load_average_at_end: process::load_average(),
            backend: self.backend.name().into(),
            store,
            commit: header.commit,
            gate_binary: header.gate_binary,
            command: header.command,
            wall_seconds: began.elapsed().as_secs_f64(),
            window_seconds: self.settings.window.as_secs_f64(),
            ceiling,
            floor,
            failure_pages,
            flows_at_rate,
            concurrency,
            flow_floor,
            max_flows_per_second,
            slow,
            idle,
            startup,
            targets: Vec::new(),
        };
        report.targets = targets(&report, &self.settings);
        Ok(report)
    }

    fn plan(&self, addr: std::net::SocketAddr, path: load::PathFn, expect: StatusCode) -> Plan {
        Plan { addr, path, expect, warmup: self.settings.warmup, window: self.settings.window }
    }

    async fn start_gate(&self, name: &str, provider: &Server) -> Result<(GateSetup, Gate), String> {
        let dir = self.out.join(name);
        // A fresh database for every scenario.
        let _ = std::fs::remove_dir_all(&dir);
        let mut setup = GateSetup::new(&self.gate_binary, &dir, &provider.base_url(), &self.backend)
            .map_err(|err| format!("{name}: {err}"))?;
        setup.detect_limits()?;
        let gate = setup.start().await.map_err(|err| format!("{name}: {err}"))?;
        if let Ok(mut fresh) = self.fresh_startups.lock() {
            fresh.push(gate.ready_after);
        }
        Ok((setup, gate))
    }

    /// Closed-loop load on one running server: its rate, latency, CPU and peak memory, reported under `name`.
    async fn closed_loop_on(&self, server: &Server, path: load::PathFn, expect: StatusCode, name: &str) -> Requests {
        let plan = self.plan(server.addr, path, expect);
        let watch = Watch::start(&self.settings, server.pid, None);
        let measured = load::closed_loop(&plan, self.settings.connections).await;
        let watched = watch.finish().await;
        let load = format!("closed loop, {} keep-alive connections", self.settings.connections);
        requests(name, load, &measured, &watched, server.memory().peak_kib)
    }

    /// The ceiling: a minimal axum handler returning a small page, closed loop.
    async fn ceiling(&self) -> Result<Requests, String> {
        log("ceiling: minimal axum handler, closed loop");
        let server = servers::spawn_role(&["ceiling"]).await?;
        let name = "Ceiling: minimal axum handler, small page";
        let ceiling = self.closed_loop_on(&server, Arc::new(|_| "/".to_owned()), StatusCode::OK, name).await;
        server.stop().await;
        Ok(ceiling)
    }

    /// The ceiling's process doing the least a failure page must do: a page of that size and one log line.
    async fn floor(&self) -> Result<Requests, String> {
        log("floor: the ceiling's handler with a failure page's size and one log line, closed loop");
        std::fs::create_dir_all(&self.out).map_err(|err| format!("{}: {err}", self.out.display()))?;
        let log_file = self.out.join("floor.log");
        let log_arg = log_file.to_string_lossy().into_owned();
        let server = servers::spawn_role(&["ceiling", "--log-file", &log_arg]).await?;
        let name = "Floor: the ceiling's handler, a 1.6 KB page and one JSON log line written to a file";
        let floor = self.closed_loop_on(&server, Arc::new(|_| "/floor".to_owned()), StatusCode::OK, name).await;
        server.stop().await;
        let _ = std::fs::remove_file(&log_file);
        Ok(floor)
    }

    /// Callbacks with a missing or unknown state, as fast as they are answered.
    async fn failure_pages(&self, provider: &Server) -> Result<Requests, String> {
        log("failure pages: callbacks with a missing or unknown state, closed loop");
        let (_, gate) = self.start_gate("failure-pages", provider).await?;
        let name = "Failure pages: callback with missing or unknown state";
        let failures = self.closed_loop_on(&gate.server, Arc::new(failure_path), StatusCode::BAD_REQUEST, name).await;
        gate.server.stop().await;
        Ok(failures)
    }

    /// Complete flows arriving at a fixed rate, each in a new browser.
    async fn flows_at_rate(&self, provider: &Server) -> Result<Flows, String> {
        let rate = self.settings.flow_rate;
        log(format!("complete flows at {rate:.0} flows/s, a new browser each"));
        let (_, gate) = self.start_gate("flows-at-rate", provider).await?;
        let target = Target::new(gate.server.base_url(), gate.api_key.clone());
        token_times(provider).await?;
        let collector = Arc::new(Mutex::new(Collector::default()));
        let permits = Arc::new(Semaphore::new(self.settings.flow_cap));
        let watch = Watch::start(&self.settings, gate.server.pid, Some(provider.pid));
        let started = Instant::now();
        let record_from = started + self.settings.warmup;
        let stop_at = record_from + self.settings.window;
        let period = Duration::from_secs_f64(1.0 / rate);
        let mut shed = 0u64;
        for n in 0u64.. {
            let due = started + period.mul_f64(n as f64);
            if due >= stop_at {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                if due >= record_from {
                    shed += 1;
                }
                continue;
            };
            let (target, collector) = (target.clone(), collector.clone());
            tokio::spawn(async move {
                let browser = Browser::new();
                let outcome = browser::run_flow(&target, &browser, &format!("user-{n}")).await;
                if due >= record_from
                    && let Ok(mut collector) = collector.lock()
                {
                    collector.record(outcome, due.elapsed());
                }
                drop(permit);
            });
        }
        let cap = u32::try_from(self.settings.flow_cap).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(Duration::from_secs(60), permits.acquire_many(cap)).await;
        let watched = watch.finish().await;
        if drained.is_err() {
            log("flows at rate: some flows were still running 60 s after the window");
        }
        let times = token_times(provider).await?;
        let peak = gate.server.memory().peak_kib;
        gate.server.stop().await;
        let mut collector = take(&collector);
        collector.shed(shed);
        Ok(collector.figures(
            format!("Complete flows at {rate:.0} flows/s"),
            format!("open loop, {rate:.0} flows/s, a new browser per flow"),
            self.settings.flow_cap,
            Some(rate),
            self.settings.window,
            &times,
            &watched,
            peak,
        ))
    }

    /// Complete flows with `browsers` browsers, each running flows back to back; with `perf_out`, callback-gate is
    /// profiled by `perf record` over the window.
    pub async fn flows_closed(
        &self,
        provider: &Server,
        browsers: usize,
        perf_out: Option<&std::path::Path>,
    ) -> Result<Flows, String> {
        log(format!("complete flows, {browsers} concurrent browsers, closed loop"));
        let (_, gate) = self.start_gate(&format!("flows-{browsers}"), provider).await?;
        self.flows_closed_on(gate.server, &gate.api_key, provider, browsers, perf_out).await
    }

    /// The flow floor's row of the run, at the callback target's concurrency, with its log line.
    async fn flow_floor_row(&self, provider: &Server) -> Result<Flows, String> {
        let floor = self.flows_on_floor(provider, CALLBACK_TARGET_BROWSERS).await?;
        log(format!(
            "flow floor, {CALLBACK_TARGET_BROWSERS} browsers: {:.0} flows/s, flow p99 {}, added p99 {}",
            floor.flows_per_second,
            report::time(floor.flow.p99_us),
            report::time(floor.added.p99_us)
        ));
        Ok(floor)
    }

    /// Complete flows with `browsers` browsers on the flow floor (see [`crate::flow_floor`]) instead of
    /// callback-gate.
    pub async fn flows_on_floor(&self, provider: &Server, browsers: usize) -> Result<Flows, String> {
        log(format!("complete flows on the flow floor, {browsers} concurrent browsers, closed loop"));
        let floor = servers::spawn_role(&["flow-floor", "--provider", &provider.base_url()]).await?;
        let mut flows = self.flows_closed_on(floor, crate::flow_floor::API_KEY, provider, browsers, None).await?;
        flows.name = format!("flow floor, {browsers} browsers");
        Ok(flows)
    }

    async fn flows_closed_on(
        &self,
        server: Server,
        api_key: &str,
        provider: &Server,
        browsers: usize,
        perf_out: Option<&std::path::Path>,
    ) -> Result<Flows, String> {
        let target = Target::new(server.base_url(), api_key.to_owned());
        token_times(provider).await?;
        let collector = Arc::new(Mutex::new(Collector::default()));
        let watch = Watch::start(&self.settings, server.pid, Some(provider.pid));
        let record_from = Instant::now() + self.settings.warmup;
        let stop_at = record_from + self.settings.window;
        let perf = perf_out
            .map(|out| crate::profile::record_cpu(server.pid, record_from, self.settings.window, out.to_path_buf()));
        let mut tasks = Vec::with_capacity(browsers);
        for b in 0..browsers {
            let (target, collector) = (target.clone(), collector.clone());
            tasks.push(tokio::spawn(async move {
                let browser = Browser::new();
                let identifier = format!("user-{b}");
                while Instant::now() < stop_at {
                    let began = Instant::now();
                    let outcome = browser::run_flow(&target, &browser, &identifier).await;
                    let ended = Instant::now();
                    if ended >= record_from
                        && ended < stop_at
                        && let Ok(mut collector) = collector.lock()
                    {
                        collector.record(outcome, ended - began);
                    }
                }
            }));
        }
        let watched = watch.finish().await;
        join_all(tasks, Duration::from_secs(60)).await;
        if let Some(perf) = perf {
            let _ = perf.await;
        }
        let times = token_times(provider).await?;
        let peak = server.memory().peak_kib;
        server.stop().await;
        Ok(take(&collector).figures(
            format!("{browsers} browsers"),
            format!("closed loop, {browsers} browsers"),
            browsers,
            None,
            self.settings.window,
            &times,
            &watched,
            peak,
        ))
    }

    /// Many callbacks waiting on a slow token endpoint, while failure pages and `/healthz` are measured.
    async fn slow_provider(&self) -> Result<(Slow, GateSetup), String> {
        let s = &self.settings;
        let delay_ms = s.slow_delay.as_millis() as u64;
        let delay = delay_ms.to_string();
        let provider = servers::spawn_role(&["provider", "--token-delay-ms", &delay]).await?;
        let (setup, gate) = self.start_gate("slow-provider", &provider).await?;
        let target = Target::new(gate.server.base_url(), gate.api_key.clone());

        // Callbacks are staggered over one token delay, so the steady state is reached after it.
        let ramp = s.slow_delay + Duration::from_millis(500);
        let per_browser =
            ((ramp + s.window + s.slow_delay).as_secs_f64() / s.slow_delay.as_secs_f64()).ceil() as usize + 1;
        log(format!(
            "slow provider: preparing {} flows ({} browsers x {per_browser}) up to the provider's answer",
            s.slow_browsers * per_browser,
            s.slow_browsers
        ));
        let prepare_began = Instant::now();
        let mut preparing = Vec::with_capacity(s.slow_browsers);
        for b in 0..s.slow_browsers {
            let target = target.clone();
            preparing.push(tokio::spawn(async move {
                let browser = Browser::new();
                let mut flows = Vec::with_capacity(per_browser);
                for f in 0..per_browser {
                    flows.push(browser::prepare(&target, &browser, &format!("user-{b}-{f}")).await?);
                }
                Ok::<_, FlowError>((browser, flows))
            }));
        }
        let mut slots = Vec::with_capacity(s.slow_browsers);
        for task in preparing {
            match task.await {
                Ok(Ok(slot)) => slots.push(slot),
                Ok(Err(err)) => return Err(format!("slow provider: preparing a flow failed: {err}")),
                Err(err) => return Err(format!("slow provider: a preparing task failed: {err}")),
            }
        }
        let prepare_seconds = prepare_began.elapsed().as_secs_f64();
        let prepared_flows = (slots.len() * per_browser) as u64;
        log(format!("slow provider: prepared in {prepare_seconds:.1} s; measuring"));
        token_times(&provider).await?;

        let collector = Arc::new(Mutex::new(Collector::default()));
        let in_flight = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let record_from = started + ramp;
        let stop_at = record_from + s.window;
        let watch = Watch::start_at(record_from, s.window, gate.server.pid, Some(provider.pid));
        let count = slots.len().max(1);
        let mut tasks = Vec::with_capacity(count);
        for (index, (browser, flows)) in slots.into_iter().enumerate() {
            let (target, collector, in_flight) = (target.clone(), collector.clone(), in_flight.clone());
            let offset = s.slow_delay.mul_f64(index as f64 / count as f64);
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until((started + offset).into()).await;
                for prepared in flows {
                    if Instant::now() >= stop_at {
                        break;
                    }
                    in_flight.fetch_add(1, Ordering::Relaxed);
                    let began = Instant::now();
                    let outcome = browser::finish(&target, &browser, prepared).await;
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    let ended = Instant::now();
                    if ended >= record_from
                        && ended < stop_at
                        && let Ok(mut collector) = collector.lock()
                    {
                        // The flow's time here is the part run under load: callback and result page.
                        collector.record(outcome, ended - began);
                    }
                }
            }));
        }
        let sampler = {
            let in_flight = in_flight.clone();
            let pid = gate.server.pid;
            tokio::spawn(async move {
                tokio::time::sleep_until(record_from.into()).await;
                let mut samples = Vec::new();
                let mut max_rss = 0;
                while Instant::now() < stop_at {
                    samples.push(in_flight.load(Ordering::Relaxed));
                    max_rss = max_rss.max(process::memory(pid).rss_kib);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (samples, max_rss)
            })
        };
        let side_plan =
            |path: load::PathFn, expect| Plan { addr: gate.server.addr, path, expect, warmup: ramp, window: s.window };
        let failure_plan = side_plan(Arc::new(failure_path), StatusCode::BAD_REQUEST);
        let health_plan = side_plan(Arc::new(|_| "/healthz".to_owned()), StatusCode::OK);
        let (failures, health) = tokio::join!(
            load::open_loop(&failure_plan, s.slow_failure_rate, 8),
            load::open_loop(&health_plan, s.slow_health_rate, 4)
        );
        let (samples, max_rss) = sampler.await.unwrap_or_default();
        let watched = watch.finish().await;
        join_all(tasks, Duration::from_secs(30)).await;
        let times = token_times(&provider).await?;
        let peak = gate.server.memory().peak_kib;
        gate.server.stop().await;
        provider.stop().await;

        let mut flows = take(&collector).figures(
            "Slow provider".into(),
            format!("{} browsers, callbacks staggered, token endpoint {delay_ms} ms", s.slow_browsers),
            s.slow_browsers,
            None,
            s.window,
            &times,
            &watched,
            peak,
        );
        // The callbacks and result pages of prepared flows: two requests per flow under load.
        flows.gate_requests_per_second = flows.flows_per_second * 2.0;
        let no_cpu = Watched::default();
        let failure_pages = requests(
            "Slow provider: failure pages",
            format!("open loop, {:.0} req/s", s.slow_failure_rate),
            &failures,
            &no_cpu,
            peak,
        );
        let healthz = requests(
            "Slow provider: `/healthz`",
            format!("open loop, {:.0} req/s", s.slow_health_rate),
            &health,
            &no_cpu,
            peak,
        );
        let mean = if samples.is_empty() { 0.0 } else { samples.iter().sum::<u64>() as f64 / samples.len() as f64 };
        Ok((
            Slow {
                token_delay_ms: delay_ms,
                browsers: s.slow_browsers,
                prepared_flows,
                prepare_seconds,
                in_flight_min: samples.iter().copied().min().unwrap_or(0),
                in_flight_mean: mean,
                in_flight_max: samples.iter().copied().max().unwrap_or(0),
                flows,
                failure_pages,
                healthz,
                peak_rss_kib: peak,
                max_rss_during_window_kib: max_rss,
            },
            setup,
        ))
    }

    /// Resident memory with many idle keep-alive connections open, for callback-gate and for the ceiling server.
    async fn idle(&self, setup: &GateSetup) -> Result<Idle, String> {
        let connections = self.settings.idle_connections;
        log(format!("{connections} idle keep-alive connections"));
        let gate = setup.start().await?;
        let (before, with_idle, answered) = hold_idle(&gate.server, connections).await;
        gate.server.stop().await;
        let ceiling = servers::spawn_role(&["ceiling"]).await?;
        let (ceiling_before, ceiling_with_idle, _) = hold_idle(&ceiling, connections).await;
        ceiling.stop().await;
        Ok(Idle {
            connections,
            answered,
            rss_before_kib: before.rss_kib,
            rss_with_idle_kib: with_idle.rss_kib,
            peak_rss_kib: with_idle.peak_kib,
            ceiling_rss_before_kib: ceiling_before.rss_kib,
            ceiling_rss_with_idle_kib: ceiling_with_idle.rss_kib,
        })
    }

    /// From spawn to the first 200 from `/readyz`, with the slow scenario's database (thousands of flows).
    async fn startup(&self, setup: &GateSetup, flows: u64) -> Result<Startup, String> {
        log(format!("start-up to ready with an existing database, {} runs", self.settings.startup_runs));
        let database_bytes = setup.database_bytes();
        let mut runs = Vec::with_capacity(self.settings.startup_runs);
        for _ in 0..self.settings.startup_runs {
            let gate = setup.start().await?;
            runs.push(gate.ready_after.as_secs_f64() * 1000.0);
            gate.server.stop().await;
        }
        let fresh: Vec<f64> = self
            .fresh_startups
            .lock()
            .map(|f| f.iter().map(|d| d.as_secs_f64() * 1000.0).collect())
            .unwrap_or_default();
        Ok(Startup {
            database_bytes,
            database_flows: flows,
            median_ms: median(&runs),
            max_ms: runs.iter().copied().fold(0.0, f64::max),
            runs_ms: runs,
            fresh_database_median_ms: median(&fresh),
        })
    }
}

/// The `load` command: closed-loop requests against a server started by hand (for `perf record -p`).
pub async fn profile_load(
    addr: std::net::SocketAddr,
    path: Option<String>,
    expect: u16,
    connections: usize,
    seconds: f64,
) -> String {
    let path: load::PathFn = match path {
        Some(path) => Arc::new(move |_| path.clone()),
        None => Arc::new(failure_path),
    };
    let plan = Plan {
        addr,
        path,
        expect: StatusCode::from_u16(expect).unwrap_or(StatusCode::BAD_REQUEST),
        warmup: Duration::from_millis(500),
        window: Duration::from_secs_f64(seconds.max(0.1)),
    };
    let measured = load::closed_loop(&plan, connections.max(1)).await;
    let latency = Percentiles::of(&measured.latency);
    format!(
        "{:.0} req/s, p50 {}, p99 {}, p99.9 {}, {} errors{}",
        measured.per_second(),
        report::time(latency.p50_us),
        report::time(latency.p99_us),
        report::time(latency.p999_us),
        measured.errors,
        measured.first_error.map(|e| format!(" (first: {e})")).unwrap_or_default()
    )
}

/// What the command line and the build tell the report.
pub struct ReportHeader {
    pub mode: String,
    pub commit: String,
    pub gate_binary: String,
    pub command: String,
}

/// Half the failure-page requests carry no state at all, half a well-formed state that matches no flow.
pub fn failure_path(n: u64) -> String {
    if n.is_multiple_of(2) {
        format!("/connect/callback/{}", browser::CONNECTION)
    } else {
        format!("/connect/callback/{}?state={}&code=bench", browser::CONNECTION, fake_state(n))
    }
}

/// A state of the same shape as callback-gate's (43 URL-safe characters), different for every `n`.
fn fake_state(n: u64) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut x = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut out = String::with_capacity(43);
    while out.len() < 43 {
        // splitmix64
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        for i in 0..10 {
            if out.len() < 43 {
                out.push(ALPHABET[((z >> (i * 6)) & 63) as usize] as char);
            }
        }
    }
    out
}

/// Opens `count` keep-alive connections to `server`, one `GET /healthz` on each, and reads its memory before and
/// while they are held idle. Returns (before, with idle connections, connections answered).
async fn hold_idle(server: &Server, count: usize) -> (process::Memory, process::Memory, usize) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.memory();
    let mut open = Vec::with_capacity(count);
    for _ in 0..count {
        if let Ok(mut connection) = load::Connection::open(server.addr).await
            && matches!(connection.get("/healthz").await, Ok((StatusCode::OK, _)))
        {
            open.push(connection);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with_idle = server.memory();
    (before, with_idle, open.len())
}

/// Collects how long the provider's token endpoint took for each code since the last call.
async fn token_times(provider: &Server) -> Result<HashMap<String, u64>, String> {
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|err| err.to_string())?
        .get(format!("{}/token-times", provider.base_url()))
        .send()
        .await
        .map_err(|err| format!("token times: {err}"))?
        .text()
        .await
        .map_err(|err| format!("token times: {err}"))?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter_map(|(code, us)| us.parse().ok().map(|us| (code.to_owned(), us)))
        .collect())
}

async fn join_all(tasks: Vec<tokio::task::JoinHandle<()>>, limit: Duration) {
    let deadline = Instant::now() + limit;
    for task in tasks {
        let abort = task.abort_handle();
        if tokio::time::timeout_at(deadline.into(), task).await.is_err() {
            abort.abort();
        }
    }
}

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Per-flow measurements of one scenario.
struct Collector {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    flow: Histogram<u64>,
    link: Histogram<u64>,
    start: Histogram<u64>,
    authorize: Histogram<u64>,
    callback: Histogram<u64>,
    result: Histogram<u64>,
    /// `(code, callback µs)` of each successful flow, matched with the provider's token times afterwards.
    callbacks: Vec<(String, u64)>,
}

impl Default for Collector {
    fn default() -> Self {
        Self {
            ok: 0,
            errors: 0,
            first_error: None,
            flow: histogram(),
            link: histogram(),
            start: histogram(),
            authorize: histogram(),
            callback: histogram(),
            result: histogram(),
            callbacks: Vec::new(),
        }
    }
}

fn take(collector: &Arc<Mutex<Collector>>) -> Collector {
    collector.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default()
}

impl Collector {
    fn record(&mut self, outcome: Result<FlowTimes, FlowError>, flow_time: Duration) {
        match outcome {
            Ok(times) => {
                self.ok += 1;
                let _ = self.flow.record(micros(flow_time));
                for (histogram, took) in [
                    (&mut self.link, times.link),
                    (&mut self.start, times.start),
                    (&mut self.authorize, times.authorize),
                    (&mut self.callback, times.callback),
                    (&mut self.result, times.result),
                ] {
                    if !took.is_zero() {
                        let _ = histogram.record(micros(took));
                    }
                }
                self.callbacks.push((times.code, micros(times.callback)));
            }
            Err(err) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(err.to_string());
                }
            }
        }
    }

    fn shed(&mut self, shed: u64) {
        if shed > 0 {
            self.errors += shed;
            if self.first_error.is_none() {
                self.first_error = Some(format!("{shed} flows shed: too many browsers in flight"));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn figures(
        self,
        name: String,
        load: String,
        browsers: usize,
        offered: Option<f64>,
        window: Duration,
        token_times: &HashMap<String, u64>,
        watched: &Watched,
        peak_rss_kib: u64,
    ) -> Flows {
        let mut token = histogram();
        let mut added = histogram();
        for (code, callback_us) in &self.callbacks {
            if let Some(&token_us) = token_times.get(code) {
                let _ = token.record(token_us.max(1));
                let _ = added.record(callback_us.saturating_sub(token_us).max(1));
            }
        }
        let flows_per_second = self.ok as f64 / window.as_secs_f64();
        Flows {
            name,
            load,
            browsers,
            offered_per_second: offered,
            ok: self.ok,
            errors: self.errors,
            first_error: self.first_error,
            flows_per_second,
            flow: Percentiles::of(&self.flow),
            link: Percentiles::of(&self.link),
            start: Percentiles::of(&self.start),
            authorize: Percentiles::of(&self.authorize),
            callback: Percentiles::of(&self.callback),
            result: Percentiles::of(&self.result),
            token: Percentiles::of(&token),
            added: Percentiles::of(&added),
            gate_requests_per_second: flows_per_second * 4.0,
            cpu: watched.cpu(self.ok),
            peak_rss_kib,
            ratio_to_ceiling: None,
        }
    }
}

fn requests(name: &str, load: String, measured: &Measured, watched: &Watched, peak_rss_kib: u64) -> Requests {
    Requests {
        name: name.to_owned(),
        load,
        ok: measured.ok,
        errors: measured.errors,
        first_error: measured.first_error.clone(),
        per_second: measured.per_second(),
        latency: Percentiles::of(&measured.latency),
        mean_body_bytes: measured.body_bytes.checked_div(measured.ok).unwrap_or(0),
        cpu: watched.cpu(measured.ok),
        peak_rss_kib,
        ratio_to_ceiling: None,
    }
}

/// CPU time of the server, the harness and the provider over exactly the measurement window.
#[derive(Debug, Default, Clone, Copy)]
struct Watched {
    server: Duration,
    harness: Duration,
    provider: Duration,
    window: Duration,
}

impl Watched {
    fn cpu(&self, ops: u64) -> Cpu {
        if self.window.is_zero() {
            return Cpu::default();
        }
        Cpu::new(self.server, self.harness, self.provider, self.window, ops)
    }
}

struct Watch {
    handle: tokio::task::JoinHandle<Watched>,
}

impl Watch {
    fn start(settings: &Settings, server: u32, provider: Option<u32>) -> Self {
        Self::start_at(Instant::now() + settings.warmup, settings.window, server, provider)
    }

    fn start_at(from: Instant, window: Duration, server: u32, provider: Option<u32>) -> Self {
        let handle = tokio::spawn(async move {
            tokio::time::sleep_until(from.into()).await;
            let meters = (CpuMeter::start(server), CpuMeter::start(std::process::id()), provider.map(CpuMeter::start));
            let began = Instant::now();
            tokio::time::sleep(window).await;
            Watched {
                server: meters.0.spent(),
                harness: meters.1.spent(),
                provider: meters.2.map_or(Duration::ZERO, |m| m.spent()),
                window: began.elapsed(),
            }
        });
        Self { handle }
    }

    async fn finish(self) -> Watched {
        self.handle.await.unwrap_or_default()
    }
}

fn targets(report: &Report, settings: &Settings) -> Vec<Check> {
    let mut checks = Vec::new();
    let failure_ratio = report.failure_pages.ratio_to_ceiling.unwrap_or_default();
    checks.push(Check {
        target: format!(
            "Failure-page callbacks at ≥ {:.0}% of the ceiling's requests per second",
            FAILURE_RATIO_TARGET * 100.0
        ),
        measured: format!(
            "{:.0} vs {:.0} req/s: {:.0}%",
            report.failure_pages.per_second,
            report.ceiling.per_second,
            failure_ratio * 100.0
        ),
        met: failure_ratio >= FAILURE_RATIO_TARGET,
    });
    let at_rate = &report.flows_at_rate;
    let rate_held = at_rate.errors == 0 && at_rate.flows_per_second >= settings.flow_rate * 0.98;
    checks.push(Check {
        target: format!(
            "Complete flows: p99 added latency under {} ms at {FLOW_RATE_TARGET:.0} flows/s",
            ADDED_P99_TARGET_US / 1000
        ),
        measured: format!(
            "p99 added {} (p50 {}) at {:.0} flows/s offered, {:.0} completed, {} errors",
            report::time(at_rate.added.p99_us),
            report::time(at_rate.added.p50_us),
            settings.flow_rate,
            at_rate.flows_per_second,
            at_rate.errors
        ),
        met: rate_held && at_rate.added.p99_us < ADDED_P99_TARGET_US && settings.flow_rate >= FLOW_RATE_TARGET,
    });
    let at_target = report.concurrency.iter().find(|f| f.browsers == CALLBACK_TARGET_BROWSERS);
    checks.push(Check {
        target: format!(
            "Callback p99 added latency under {} ms at {CALLBACK_TARGET_BROWSERS} browsers",
            ADDED_P99_TARGET_US / 1000
        ),
        measured: at_target.map_or_else(
            || format!("{CALLBACK_TARGET_BROWSERS} browsers were not run"),
            |f| {
                format!(
                    "p99 added {} (p50 {}) at {:.0} flows/s, {} errors; the flow floor: p99 {} (p50 {}) at {:.0} flows/s",
                    report::time(f.added.p99_us),
                    report::time(f.added.p50_us),
                    f.flows_per_second,
                    f.errors,
                    report::time(report.flow_floor.added.p99_us),
                    report::time(report.flow_floor.added.p50_us),
                    report.flow_floor.flows_per_second
                )
            },
        ),
        met: at_target.is_some_and(|f| f.errors == 0 && f.added.count > 0 && f.added.p99_us < ADDED_P99_TARGET_US),
    });
    let best = report
        .concurrency
        .iter()
        .filter(|f| f.errors == 0)
        .max_by(|a, b| a.flows_per_second.total_cmp(&b.flows_per_second));
    checks.push(Check {
        target: "Maximum sustainable complete flows/s, reported".into(),
        measured: best.map_or_else(
            || "no error-free concurrency level".into(),
            |b| format!("{:.0} flows/s ({} browsers, closed loop, no errors)", b.flows_per_second, b.browsers),
        ),
        met: best.is_some(),
    });
    let slow = &report.slow;
    checks.push(Check {
        target: format!("Slow provider: failure-page p99 under {} ms", SLOW_FAILURE_P99_TARGET_US / 1000),
        measured: format!(
            "p99 {} (p99.9 {}) at {:.0} req/s with {:.0} callbacks in flight (min {})",
            report::time(slow.failure_pages.latency.p99_us),
            report::time(slow.failure_pages.latency.p999_us),
            slow.failure_pages.per_second,
            slow.in_flight_mean,
            slow.in_flight_min
        ),
        met: slow.failure_pages.latency.p99_us < SLOW_FAILURE_P99_TARGET_US && slow.failure_pages.errors == 0,
    });
    checks.push(Check {
        target: format!("Slow provider: RSS under {} MB", SLOW_RSS_TARGET_KIB / 1024),
        measured: format!("peak {}", report::mib(slow.peak_rss_kib)),
        met: slow.peak_rss_kib < SLOW_RSS_TARGET_KIB,
    });
    checks.push(Check {
        target: format!(
            "{} idle keep-alive connections: RSS under {} MB",
            report.idle.connections,
            IDLE_RSS_TARGET_KIB / 1024
        ),
        measured: format!(
            "{} with {} open ({} before); the ceiling server: {} ({} before)",
            report::mib(report.idle.rss_with_idle_kib),
            report.idle.answered,
            report::mib(report.idle.rss_before_kib),
            report::mib(report.idle.ceiling_rss_with_idle_kib),
            report::mib(report.idle.ceiling_rss_before_kib)
        ),
        met: report.idle.rss_with_idle_kib < IDLE_RSS_TARGET_KIB && report.idle.answered == report.idle.connections,
    });
    checks.push(Check {
        target: format!(
            "Start-up to ready under {STARTUP_TARGET_MS:.0} ms with an existing {} database",
            report.backend
        ),
        measured: format!(
            "median {:.1} ms, max {:.1} ms over {} runs",
            report.startup.median_ms,
            report.startup.max_ms,
            report.startup.runs_ms.len()
        ),
        met: !report.startup.runs_ms.is_empty() && report.startup.max_ms < STARTUP_TARGET_MS,
    });
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_states_look_like_real_ones_and_differ() {
        let (a, b) = (fake_state(1), fake_state(2));
        assert_eq!(a.len(), 43);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a, b);
    }

    #[test]
    fn half_the_failure_requests_carry_a_state() {
        assert_eq!(failure_path(0), "/connect/callback/bench");
        assert!(failure_path(1).starts_with("/connect/callback/bench?state="));
    }
}
