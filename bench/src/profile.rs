//! Measurements for profiling one part of a flow rather than the whole run:
//!
//! - `flows`: complete flows with N browsers on a fresh callback-gate, as the run's concurrency rows measure them,
//!   optionally under `perf record` for the window (a CPU profile of where a flow's time goes);
//! - `callgrind`: callback-gate under `valgrind --tool=callgrind`, driven one flow step at a time by one browser,
//!   with the counters zeroed before and dumped after each step's batch: instructions per step, the same for the
//!   same binary and inputs whatever else the machine does, so a change's cost can be tracked exactly.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::browser::{self, Browser, Target};
use crate::report::{self, Flows};
use crate::scenario::Bench;
use crate::servers::{self, Backend, GateSetup};

/// `flows`: one concurrency row, printed as the run's table shows it.
pub async fn flows(
    bench: &Bench,
    browsers: usize,
    perf_out: Option<PathBuf>,
    flow_floor: bool,
) -> Result<String, String> {
    let provider = servers::spawn_role(&["provider", "--token-delay-ms", "0"]).await?;
    let flows = if flow_floor {
        bench.flows_on_floor(&provider, browsers).await
    } else {
        bench.flows_closed(&provider, browsers, perf_out.as_deref()).await
    };
    provider.stop().await;
    let flows = flows?;
    Ok(describe(&flows))
}

fn describe(flows: &Flows) -> String {
    format!(
        "{} browsers: {:.0} flows/s, server CPU {:.0} µs per flow ({:.2} cores; harness {:.2}, provider {:.2}), \
         flow p50 {} p99 {}, callback p99 {}, added p50 {} p99 {}, peak RSS {}, {} errors{}\n  \
         p50 / p99 / max of each step: link {}, start {}, authorize {}, callback {}, token endpoint {}, result {}",
        flows.browsers,
        flows.flows_per_second,
        flows.cpu.server_us_per_op,
        flows.cpu.server_cores,
        flows.cpu.harness_cores,
        flows.cpu.provider_cores,
        report::time(flows.flow.p50_us),
        report::time(flows.flow.p99_us),
        report::time(flows.callback.p99_us),
        report::time(flows.added.p50_us),
        report::time(flows.added.p99_us),
        report::mib(flows.peak_rss_kib),
        flows.errors,
        flows.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
        step(&flows.link),
        step(&flows.start),
        step(&flows.authorize),
        step(&flows.callback),
        step(&flows.token),
        step(&flows.result),
    )
}

fn step(latency: &report::Percentiles) -> String {
    format!("{} / {} / {}", report::time(latency.p50_us), report::time(latency.p99_us), report::time(latency.max_us))
}

/// Runs `perf record` on `pid` from `from` for `window`, writing `out`.
pub fn record_cpu(pid: u32, from: Instant, window: Duration, out: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        let status = tokio::process::Command::new("perf")
            .args(["record", "--quiet", "-F", "499", "--call-graph", "dwarf,32768", "-p", &pid.to_string(), "-o"])
            .arg(&out)
            .args(["--", "sleep", &format!("{:.3}", window.as_secs_f64())])
            .stdout(std::process::Stdio::null())
            .status()
            .await;
        match status {
            Ok(status) if status.success() => eprintln!("[bench] CPU profile in {}", out.display()),
            Ok(status) => eprintln!("[bench] perf record ended with {status}"),
            Err(err) => eprintln!("[bench] could not run perf record: {err}"),
        }
    })
}

/// One step of a flow as callgrind counted it.
pub struct StepCount {
    pub step: &'static str,
    pub instructions: u64,
    pub per_flow: u64,
}

/// `callgrind`: instructions callback-gate spends per flow on each step.
/// With `budget`, fails when the callback step costs more instructions per flow than that.
pub async fn callgrind(
    gate_binary: &Path,
    out: &Path,
    flows: usize,
    warmup: usize,
    budget: Option<u64>,
) -> Result<String, String> {
    let flows = flows.max(1);
    let provider = servers::spawn_role(&["provider", "--token-delay-ms", "0"]).await?;
    let dir = out.join("callgrind");
    let _ = std::fs::remove_dir_all(&dir);
    let mut setup = GateSetup::new(gate_binary, &dir, &provider.base_url(), &Backend::Sqlite)?;
    setup.detect_limits()?;
    let profile = dir.join("callgrind.out");
    setup.wrapper = vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        "--quiet".into(),
        format!("--callgrind-out-file={}", profile.display()),
    ];
    let gate = setup.start().await?;
    let pid = gate.server.pid;
    let target = Target::new(gate.server.base_url(), gate.api_key.clone());
    let browser = Browser::new();
    let counted = async {
        // Warm-up: connections open, caches and the database's pages filled, the allocator's pools grown.
        for n in 0..warmup {
            browser::run_flow(&target, &browser, &format!("warm-{n}")).await.map_err(|err| err.to_string())?;
        }
        let identifiers: Vec<String> = (0..flows).map(|n| format!("user-{n}")).collect();
        let mut counts = Vec::new();

        zero(pid).await?;
        let mut links = Vec::with_capacity(flows);
        for identifier in &identifiers {
            links.push(browser::mint(&target, identifier).await.map_err(|err| err.to_string())?);
        }
        counts.push(dump(pid, &profile, "link", flows).await?);

        zero(pid).await?;
        let mut authorize = Vec::with_capacity(flows);
        for link in &links {
            authorize.push(browser::follow(&browser, link, "start").await.map_err(|err| err.to_string())?);
        }
        counts.push(dump(pid, &profile, "start", flows).await?);

        // The provider's step: callback-gate only idles meanwhile.
        let mut callbacks = Vec::with_capacity(flows);
        for url in &authorize {
            callbacks.push(browser::follow(&browser, url, "authorize").await.map_err(|err| err.to_string())?);
        }

        zero(pid).await?;
        let mut results = Vec::with_capacity(flows);
        for url in &callbacks {
            results.push(browser::callback(&browser, url).await.map_err(|err| err.to_string())?);
        }
        counts.push(dump(pid, &profile, "callback", flows).await?);

        zero(pid).await?;
        for path in &results {
            browser::result(&target, &browser, path).await.map_err(|err| err.to_string())?;
        }
        counts.push(dump(pid, &profile, "result", flows).await?);

        // Failure pages, half without a state and half with a well-formed one that matches no flow, on one
        // keep-alive connection; their events are written in the background, within the wait.
        zero(pid).await?;
        let mut connection = crate::load::Connection::open(gate.server.addr).await.map_err(|err| err.to_string())?;
        for n in 0..flows as u64 {
            let path = crate::scenario::failure_path(n);
            match connection.get(&path).await {
                Ok((status, _)) if status.as_u16() == 400 => {}
                Ok((status, _)) => return Err(format!("failure page {path}: HTTP {status}")),
                Err(err) => return Err(format!("failure page {path}: {err}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        counts.push(dump(pid, &profile, "failure page (with its event's background write)", flows).await?);

        // What the background tasks (checkpoints, the refresher's look for due accounts) cost over two idle seconds.
        zero(pid).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        counts.push(dump(pid, &profile, "idle (2 s)", 1).await?);
        Ok::<_, String>(counts)
    }
    .await;
    gate.server.stop().await;
    provider.stop().await;
    let counts = counted?;
    // The four steps of a flow come first: link, start, callback, result.
    let total: u64 = counts.iter().take(4).map(|c| c.per_flow).sum();
    let mut text = format!(
        "callgrind: instructions callback-gate spent per flow on each step ({flows} flows after {warmup} warm-up flows, \
         one browser, SQLite)\n\n| Step | Instructions | Per flow (per request for failure pages) |\n|---|---:|---:|\n"
    );
    for count in &counts {
        text.push_str(&format!("| {} | {} | {} |\n", count.step, count.instructions, count.per_flow));
    }
    text.push_str(&format!("| complete flow (link + start + callback + result) | | {total} |\n"));
    if let Some(budget) = budget {
        let callback = counts
            .iter()
            .find(|count| count.step == "callback")
            .map(|count| count.per_flow)
            .ok_or("the callback step was not counted")?;
        if callback > budget {
            return Err(format!(
                "{text}\nthe callback step costs {callback} instructions per flow, over its budget of {budget}: \
                 find what grew (docs/performance.md, \"Instructions per step\"), or raise the budget in \
                 bench/instructions if the cost is meant"
            ));
        }
        text.push_str(&format!(
            "\nThe callback step is within its budget: {callback} of {budget} instructions per flow.\n"
        ));
    }
    Ok(text)
}

async fn callgrind_control(args: &[&str], pid: u32) -> Result<(), String> {
    let output = tokio::process::Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .output()
        .await
        .map_err(|err| format!("callgrind_control: {err}"))?;
    if !output.status.success() {
        return Err(format!("callgrind_control {args:?}: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    Ok(())
}

async fn zero(pid: u32) -> Result<(), String> {
    callgrind_control(&["--zero"], pid).await
}

/// Dumps the counters since the last zero and reads their total from the newest dump file.
async fn dump(pid: u32, profile: &Path, step: &'static str, flows: usize) -> Result<StepCount, String> {
    callgrind_control(&["--dump"], pid).await?;
    let newest = newest_dump(profile)?;
    let text = std::fs::read_to_string(&newest).map_err(|err| format!("{}: {err}", newest.display()))?;
    let instructions = text
        .lines()
        .find_map(|line| line.strip_prefix("totals:").or_else(|| line.strip_prefix("summary:")))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse::<u64>().ok())
        .ok_or_else(|| format!("{}: no totals line", newest.display()))?;
    Ok(StepCount { step, instructions, per_flow: instructions / flows as u64 })
}

/// The most recent of callgrind's numbered dump files (`callgrind.out.1`, `.2`, ...).
fn newest_dump(profile: &Path) -> Result<PathBuf, String> {
    let dir = profile.parent().ok_or("no folder for the profile")?;
    let prefix = format!("{}.", profile.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    let entries = std::fs::read_dir(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let number: u64 = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((number, entry.path()))
        })
        .max_by_key(|(number, _)| *number)
        .map(|(_, path)| path)
        .ok_or_else(|| format!("no dump file next to {}", profile.display()))
}
