//! The metrics exposition in the format a scraper asks for: OpenMetrics 1.0.0 (what
//! `prometheus-client` writes, the default), or the Prometheus text format 0.0.4 for a scraper
//! whose `Accept` names only `text/plain`.

/// The content type of OpenMetrics 1.0.0.
pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus text format 0.0.4.
pub(crate) const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for the Prometheus text format rather than OpenMetrics: it
/// names `text/plain` and not OpenMetrics (no header, `*/*` and OpenMetrics get OpenMetrics).
pub(crate) fn wants_text(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        let a = a.to_ascii_lowercase();
        a.contains("text/plain") && !a.contains("application/openmetrics-text")
    })
}

/// OpenMetrics text as the Prometheus text format 0.0.4: no `# EOF` nor `# UNIT` lines; a
/// counter family's `HELP` and `TYPE` name its `_total` samples; `info` is a gauge of its
/// `_info` samples; `unknown` is `untyped`.
pub(crate) fn to_text(openmetrics: &str) -> String {
    let mut renamed: std::collections::HashMap<&str, (String, &str)> = Default::default();
    for line in openmetrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
        let family = match kind {
            "counter" => (format!("{name}_total"), "counter"),
            "info" => (format!("{name}_info"), "gauge"),
            "unknown" => (name.to_owned(), "untyped"),
            other => (name.to_owned(), other),
        };
        renamed.insert(name, family);
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                match renamed.get(name) {
                    Some((family, kind)) if prefix == "# TYPE " => {
                        out.push_str(&format!("# TYPE {family} {kind}\n"));
                    }
                    Some((family, _)) => out.push_str(&format!("{prefix}{family} {tail}\n")),
                    None => {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_is_asked_for_by_text_plain_alone() {
        assert!(wants_text(Some("text/plain;version=0.0.4")));
        assert!(wants_text(Some(
            "text/plain; version=0.0.4; q=0.5, */*; q=0.1"
        )));
        assert!(!wants_text(None));
        assert!(!wants_text(Some("*/*")));
        assert!(!wants_text(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
    }

    #[test]
    fn openmetrics_becomes_the_text_format() {
        let om = "# HELP requests Requests.\n# TYPE requests counter\n\
                  requests_total{kind=\"query\"} 3\n\
                  # HELP seconds Durations.\n# TYPE seconds histogram\n# UNIT seconds seconds\n\
                  seconds_sum 1.5\nseconds_count 2\nseconds_bucket{le=\"+Inf\"} 2\n\
                  # HELP build Build.\n# TYPE build info\nbuild_info{version=\"1\"} 1\n# EOF\n";
        let text = to_text(om);
        assert_eq!(
            text,
            "# HELP requests_total Requests.\n# TYPE requests_total counter\n\
             requests_total{kind=\"query\"} 3\n\
             # HELP seconds Durations.\n# TYPE seconds histogram\n\
             seconds_sum 1.5\nseconds_count 2\nseconds_bucket{le=\"+Inf\"} 2\n\
             # HELP build_info Build.\n# TYPE build_info gauge\nbuild_info{version=\"1\"} 1\n"
        );
    }
}
