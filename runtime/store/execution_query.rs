//! An execution search as text (the admin API's query string, the
//! console's form, the CLI's flags), checked and turned into an
//! [`ExecutionFilter`] in one place so that all three accept the same.

use super::{status, ExecutionFilter};

/// Empty strings count as not given.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
pub struct ExecutionQuery {
    #[serde(default)]
    pub process: Option<String>,
    /// A status of [`status::ALL`], any case.
    #[serde(default)]
    pub status: Option<String>,
    /// `general` or `low_latency_debug`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Queued at or after: RFC 3339, `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM[:SS]` (UTC).
    #[serde(default)]
    pub since: Option<String>,
    /// Queued before (same forms).
    #[serde(default)]
    pub until: Option<String>,
    /// Keyset paging: `<queued_at_us>:<id>` of the last execution shown.
    #[serde(default)]
    pub before: Option<String>,
}

fn given(text: &Option<String>) -> Option<String> {
    text.as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

impl ExecutionQuery {
    pub fn filter(&self, limit: u32) -> Result<ExecutionFilter, String> {
        let status = given(&self.status).map(|s| s.to_ascii_uppercase());
        if let Some(s) = &status {
            if !status::ALL.contains(&s.as_str()) {
                return Err(format!(
                    "unknown status {s:?}; use one of {}",
                    status::ALL.join(", ")
                ));
            }
        }
        let mode = given(&self.mode)
            .map(|m| {
                crate::config::WorkerMode::parse(&m.to_ascii_lowercase())
                    .map(|mode| mode.as_str().to_string())
                    .ok_or_else(|| format!("unknown mode {m:?}; use general or low_latency_debug"))
            })
            .transpose()?;
        let before = given(&self.before)
            .map(|text| {
                let bad = || format!("bad page position {text:?} (queued_at_us:id)");
                let (us, id) = text.split_once(':').ok_or_else(bad)?;
                Ok::<_, String>((us.parse::<i64>().map_err(|_| bad())?, id.to_string()))
            })
            .transpose()?;
        Ok(ExecutionFilter {
            process: given(&self.process),
            status,
            mode,
            queued_from_us: given(&self.since)
                .map(|t| time_us("since", &t))
                .transpose()?,
            queued_to_us: given(&self.until)
                .map(|t| time_us("until", &t))
                .transpose()?,
            before,
            limit,
        })
    }
}

/// RFC 3339, `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM[:SS]` (UTC) as µs since
/// the epoch.
pub fn time_us(field: &str, text: &str) -> Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    let text = text.trim();
    let at = time::OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .or_else(|| {
            let minute = format_description!("[year]-[month]-[day]T[hour]:[minute]");
            let second = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
            time::PrimitiveDateTime::parse(text, second)
                .or_else(|_| time::PrimitiveDateTime::parse(text, minute))
                .ok()
                .map(|t| t.assume_utc())
        })
        .or_else(|| {
            time::Date::parse(text, format_description!("[year]-[month]-[day]"))
                .ok()
                .map(|d| d.midnight().assume_utc())
        })
        .ok_or_else(|| {
            format!("{field}: {text:?} is not a date; use YYYY-MM-DD, YYYY-MM-DDTHH:MM (UTC) or RFC 3339")
        })?;
    Ok((at.unix_timestamp_nanos() / 1000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_becomes_a_checked_filter() {
        let query = ExecutionQuery {
            status: Some("error".into()),
            mode: Some("Low_Latency_Debug".into()),
            since: Some("2026-11-29".into()),
            until: Some("2026-11-29T01:00".into()),
            before: Some("1795914000000000:execution-x".into()),
            process: Some(" ".into()),
        };
        let filter = query.filter(50).expect("valid");
        assert_eq!(filter.status.as_deref(), Some("ERROR"));
        assert_eq!(filter.mode.as_deref(), Some("low_latency_debug"));
        assert_eq!(filter.process, None);
        assert_eq!(filter.queued_from_us, Some(1_795_910_400_000_000));
        assert_eq!(filter.queued_to_us, Some(1_795_914_000_000_000));
        assert_eq!(
            filter.before,
            Some((1_795_914_000_000_000, "execution-x".into()))
        );
        for bad in [
            ExecutionQuery {
                status: Some("DONE".into()),
                ..Default::default()
            },
            ExecutionQuery {
                mode: Some("fast".into()),
                ..Default::default()
            },
            ExecutionQuery {
                since: Some("yesterday".into()),
                ..Default::default()
            },
            ExecutionQuery {
                before: Some("12".into()),
                ..Default::default()
            },
        ] {
            assert!(bad.filter(50).is_err(), "{bad:?}");
        }
    }
}
