//! Log lines as JSON objects, written straight into the line's buffer.
//!
//! The keys are those of `tracing-subscriber`'s JSON format with flattened fields: `timestamp`, `level`, the event's
//! fields in order (`message` first where the event has one), then `target`. That format sends every value through
//! `serde_json` and an `io::Write` adapter over the line's `fmt::Write` buffer, which re-validates each small chunk
//! as UTF-8: it cost about 21,000 instructions per failure page's log line (`callback-gate-bench callgrind`), an
//! eighth of the whole request. This one writes each value once, escaped, into the same buffer.
//!
//! The service opens no spans of its own, so a line carries no span list.

use std::fmt::{self, Write as _};

use time::OffsetDateTime;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter behind `LogFormat::Json`.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        // Events forwarded from the `log` crate carry their real level and target in their fields.
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer, OffsetDateTime::now_utc())?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(metadata.level().as_str())?;
        writer.write_char('"')?;
        let mut fields = Fields { out: &mut writer, scratch: String::new(), result: Ok(()) };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        write_string(&mut writer, metadata.target())?;
        writer.write_str("}\n")
    }
}

/// `2026-12-04T01:48:46.710772Z`: UTC, microseconds, written digit by digit (every log line starts with one).
fn write_timestamp(out: &mut impl fmt::Write, at: OffsetDateTime) -> fmt::Result {
    let at = at.to_offset(time::UtcOffset::UTC);
    let Some(year) = u32::try_from(at.year()).ok().filter(|year| *year <= 9999) else {
        return write!(out, "{at}");
    };
    let fields = [
        (year, 4, b'-'),
        (u32::from(u8::from(at.month())), 2, b'-'),
        (u32::from(at.day()), 2, b'T'),
        (u32::from(at.hour()), 2, b':'),
        (u32::from(at.minute()), 2, b':'),
        (u32::from(at.second()), 2, b'.'),
        (at.microsecond(), 6, b'Z'),
    ];
    let mut buffer = [0u8; 32];
    let written = crate::telemetry::padded_digits(&fields, &mut buffer);
    out.write_str(std::str::from_utf8(&buffer[..written]).map_err(|_| fmt::Error)?)
}

/// A number of milliseconds as the service logs them (rounded to the microsecond): written from its integer count
/// of thousandths when it is one, which reads back as exactly the same number and costs a fraction of formatting
/// the float; other numbers as the standard library writes them.
fn write_f64(out: &mut impl fmt::Write, value: f64) -> fmt::Result {
    let thousandths = (value * 1000.0).round();
    if !value.is_sign_positive() || !(0.0..1e15).contains(&thousandths) || thousandths / 1000.0 != value {
        return write!(out, "{value}");
    }
    // In range and integral: the cast is exact.
    let thousandths = thousandths as u64;
    let (whole, mut fraction) = (thousandths / 1000, thousandths % 1000);
    write!(out, "{whole}")?;
    if fraction == 0 {
        return Ok(());
    }
    out.write_char('.')?;
    let mut digits = 3;
    while fraction % 10 == 0 {
        fraction /= 10;
        digits -= 1;
    }
    for place in (0..digits).rev() {
        out.write_char(char::from(b'0' + (fraction / 10u64.pow(place) % 10) as u8))?;
    }
    Ok(())
}

/// A JSON string: quoted, with `"`, `\` and control characters escaped as RFC 8259 requires.
fn write_string(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    out.write_char('"')?;
    write_unquoted(out, value)?;
    out.write_char('"')
}

/// Whether a string goes into JSON as it is. Written without an early return, so the compiler checks many bytes at
/// once: almost every value logged is plain, and this is the whole cost of writing it.
fn is_plain(value: &str) -> bool {
    !value.bytes().fold(false, |special, byte| special | (byte < 0x20) | (byte == b'"') | (byte == b'\\'))
}

/// The inside of a JSON string.
fn write_unquoted(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    if is_plain(value) {
        return out.write_str(value);
    }
    let mut start = 0;
    for (at, byte) in value.bytes().enumerate() {
        let escaped = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.write_str(&value[start..at])?;
        if escaped.is_empty() {
            write!(out, "\\u{byte:04x}")?;
        } else {
            out.write_str(escaped)?;
        }
        start = at + 1;
    }
    out.write_str(&value[start..])
}

/// Writes each field as `,"name":value`.
struct Fields<'a, W> {
    out: &'a mut W,
    /// Where `Debug` values are formatted before they are escaped, reused across fields.
    scratch: String,
    result: fmt::Result,
}

impl<W: fmt::Write> Fields<'_, W> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        self.out.write_str(",\"")?;
        write_unquoted(self.out, field.name())?;
        self.out.write_str("\":")
    }

    /// `,"name":"`, for a string value to follow.
    fn quoted_key(&mut self, field: &Field) -> fmt::Result {
        self.out.write_str(",\"")?;
        write_unquoted(self.out, field.name())?;
        self.out.write_str("\":\"")
    }

    fn raw(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| self.out.write_fmt(value));
        }
    }
}

impl<W: fmt::Write> Visit for Fields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = self
                .quoted_key(field)
                .and_then(|()| write_unquoted(self.out, value))
                .and_then(|()| self.out.write_char('"'));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        self.scratch.clear();
        let mut scratch = std::mem::take(&mut self.scratch);
        self.result =
            write!(scratch, "{value:?}").and_then(|()| self.key(field)).and_then(|()| write_string(self.out, &scratch));
        self.scratch = scratch;
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity; serde_json writes them as null too.
        if value.is_finite() {
            if self.result.is_ok() {
                self.result = self.key(field).and_then(|()| write_f64(self.out, value));
            }
        } else {
            self.raw(field, format_args!("null"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{value}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_json_requires() {
        let hostile =
            "quote \" backslash \\ newline \n cr \r tab \t nul \0 esc \u{1b} del \u{7f} line sep \u{2028} é 日本";
        let mut out = String::new();
        write_string(&mut out, hostile).unwrap();
        let parsed: String = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed, hostile);
        assert!(!out.chars().any(|c| c.is_control() && c != '\u{7f}'), "{out}");
    }

    #[test]
    fn only_quotes_backslashes_and_control_characters_are_not_plain() {
        for byte in 0u8..0x80 {
            let value = format!("ab{}cd", char::from(byte));
            let special = byte < 0x20 || byte == b'"' || byte == b'\\';
            assert_eq!(is_plain(&value), !special, "{byte:#x}");
            let mut out = String::new();
            write_string(&mut out, &value).unwrap();
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), value);
        }
        assert!(is_plain("é 日本 \u{7f} \u{2028}"), "JSON needs no escape beyond ASCII controls");
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let at = time::macros::datetime!(2026-12-04 01:48:46.710772 UTC);
        let mut out = String::new();
        write_timestamp(&mut out, at).unwrap();
        assert_eq!(out, "2026-12-04T01:48:46.710772Z");
        out.clear();
        write_timestamp(&mut out, time::macros::datetime!(2027-01-01 00:00:00.000009 +01:00)).unwrap();
        assert_eq!(out, "2026-12-31T23:00:00.000009Z");
    }

    #[test]
    fn numbers_read_back_as_the_same_number() {
        let samples = [0.0, 0.001, 0.025, 0.086, 0.1, 0.5, 1.0, 2.25, 12.3, 999.999, 1234.5, 86_400_000.007];
        let odd = [1e-7, 0.0005, 1.0 / 3.0, -0.0, -2.5, 1e20, f64::MIN_POSITIVE];
        for value in samples.into_iter().chain(odd) {
            let mut out = String::new();
            write_f64(&mut out, value).unwrap();
            assert_eq!(out.parse::<f64>().unwrap().to_bits(), value.to_bits(), "{value} as {out}");
            assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "{out} is JSON");
        }
        let mut out = String::new();
        write_f64(&mut out, 0.025).unwrap();
        assert_eq!(out, "0.025");
        out.clear();
        write_f64(&mut out, 3.0).unwrap();
        assert_eq!(out, "3");
        out.clear();
        write_f64(&mut out, 12.3).unwrap();
        assert_eq!(out, "12.3");
    }

    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        let capture = Capture::default();
        let sink = capture.clone();
        let subscriber = tracing_subscriber::fmt().event_format(JsonLine).with_writer(move || sink.clone()).finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                target: "callback_gate::outcome",
                outcome = "state_invalid",
                stored = true,
                status = 502_u16,
                offset = -3_i64,
                latency_ms = 0.025,
                not_a_number = f64::NAN,
                detail = %"a \"quoted\"\nline",
                debug = ?Some("x"),
                "flow failed"
            );
        });
        let bytes = capture.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "flow failed");
        assert_eq!(line["target"], "callback_gate::outcome");
        assert_eq!(line["outcome"], "state_invalid");
        assert_eq!(line["stored"], true);
        assert_eq!(line["status"], 502);
        assert_eq!(line["offset"], -3);
        assert_eq!(line["latency_ms"], 0.025);
        assert_eq!(line["not_a_number"], serde_json::Value::Null);
        assert_eq!(line["detail"], "a \"quoted\"\nline");
        assert_eq!(line["debug"], "Some(\"x\")");
        let timestamp = line["timestamp"].as_str().unwrap();
        assert!(
            OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339).is_ok(),
            "{timestamp}"
        );
        assert!(text.starts_with("{\"timestamp\":\""), "{text}");
        assert!(text.ends_with(",\"target\":\"callback_gate::outcome\"}\n"), "{text}");
    }
}
