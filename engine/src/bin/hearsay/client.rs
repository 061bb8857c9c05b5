//! The client subcommands: HTTP requests to a running agent, answers as aligned tables or
//! (`--json`) as the agent's JSON.

use std::time::Duration;

use serde_json::Value as Json;

use crate::json;
use crate::ClientArgs;

/// A connection to one agent's HTTP endpoint.
pub(crate) struct Client {
    agent: ureq::Agent,
    base: String,
    json: bool,
}

impl Client {
    pub(crate) fn new(args: &ClientArgs) -> Result<Self, String> {
        let addr = args.agent.trim().trim_end_matches('/');
        if addr.is_empty() {
            return Err("invalid `--agent`: empty address".into());
        }
        let base = if addr.contains("://") {
            if !addr.starts_with("http://") {
                return Err(format!(
                    "invalid `--agent`: {addr}: only http:// is supported"
                ));
            }
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let config = ureq::Agent::config_builder()
            // Answers of every status are read here, to show the agent's error message.
            .http_status_as_error(false)
            // The agent is local: never go through a proxy from the environment.
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(15)))
            .build();
        Ok(Self {
            agent: config.into(),
            base,
            json: args.json,
        })
    }

    /// Send a request; the answer's JSON when its status is 2xx, else one line saying why.
    fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Json, String> {
        let url = format!("{}{path}", self.base);
        let result = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("PUT", Some(b)) => self.agent.put(&url).send(b),
            ("PUT", None) => self.agent.put(&url).send_empty(),
            (_, Some(b)) => self.agent.post(&url).send(b),
            (_, None) => self.agent.post(&url).send_empty(),
        };
        let mut resp = result.map_err(|e| {
            format!(
                "cannot reach agent at {}: {}",
                self.base.trim_start_matches("http://"),
                reason(&e)
            )
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("cannot read the agent's answer: {}", reason(&e)))?;
        let body: Json = serde_json::from_str(&text).unwrap_or(Json::String(text));
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            let msg = body
                .get("error")
                .and_then(Json::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| body.to_string());
            Err(format!("agent answered {status}: {msg}"))
        }
    }

    fn print_json(&self, j: &Json) {
        emitln(format_args!(
            "{}",
            serde_json::to_string_pretty(j).unwrap_or_else(|_| j.to_string())
        ));
    }

    /// `hearsay members`.
    pub(crate) fn members(&self) -> Result<(), String> {
        let body = self.call("GET", "/v1/members", None)?;
        if self.json {
            self.print_json(&body);
            return Ok(());
        }
        let rows = body["members"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .map(|m| {
                        vec![
                            if m["local"].as_bool() == Some(true) {
                                "*".into()
                            } else {
                                String::new()
                            },
                            text(&m["id"]),
                            text(&m["addr"]),
                            text(&m["status"]),
                            text(&m["incarnation"]),
                            if m["drained"].as_bool() == Some(true) {
                                "yes".into()
                            } else {
                                "no".into()
                            },
                            json::bytes_text(&m["metadata"]),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default();
        emit(format_args!(
            "{}",
            table(
                &[
                    "",
                    "ID",
                    "ADDRESS",
                    "STATUS",
                    "INCARNATION",
                    "DRAINED",
                    "METADATA"
                ],
                rows
            )
        ));
        Ok(())
    }

    /// `hearsay lookup KEY [--replicas N]`.
    pub(crate) fn lookup(&self, key: &str, replicas: u16) -> Result<(), String> {
        let path = format!(
            "/v1/lookup/{}?replicas={replicas}",
            json::encode_component(key.as_bytes())
        );
        let body = self.call("GET", &path, None)?;
        if self.json {
            self.print_json(&body);
            return Ok(());
        }
        let rows = body["replicas"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .enumerate()
                    .map(|(i, r)| {
                        vec![
                            if i == 0 {
                                "primary".to_string()
                            } else {
                                format!("replica {i}")
                            },
                            text(&r["id"]),
                            text(&r["addr"]),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default();
        emit(format_args!("{}", table(&["ROLE", "ID", "ADDRESS"], rows)));
        Ok(())
    }

    /// `hearsay get KEY`: the value alone (or the JSON answer).
    pub(crate) fn get(&self, key: &str) -> Result<(), String> {
        let path = format!("/v1/kv/{}", json::encode_component(key.as_bytes()));
        let body = self.call("GET", &path, None)?;
        if self.json {
            self.print_json(&body);
        } else {
            emitln(format_args!("{}", json::value_text(&body["value"])));
        }
        Ok(())
    }

    /// `hearsay set KEY VALUE`.
    pub(crate) fn set(&self, key: &str, value: &str) -> Result<(), String> {
        let path = format!("/v1/kv/{}", json::encode_component(key.as_bytes()));
        let body = self.call("PUT", &path, Some(value.as_bytes()))?;
        self.print_value(key, &body);
        Ok(())
    }

    /// `hearsay incr KEY [N]` and `hearsay decr KEY [N]`.
    pub(crate) fn add(&self, key: &str, n: u64, incr: bool) -> Result<(), String> {
        let path = format!(
            "/v1/{}/{}?by={n}",
            if incr { "incr" } else { "decr" },
            json::encode_component(key.as_bytes())
        );
        let body = self.call("POST", &path, None)?;
        self.print_value(key, &body);
        Ok(())
    }

    fn print_value(&self, key: &str, body: &Json) {
        if self.json {
            self.print_json(body);
        } else {
            emitln(format_args!("{key} = {}", json::value_text(&body["value"])));
        }
    }

    /// `hearsay drain`, `undrain` and `leave`.
    pub(crate) fn action(&self, what: &str) -> Result<(), String> {
        let body = self.call("POST", &format!("/v1/{what}"), None)?;
        if self.json {
            self.print_json(&body);
        } else {
            emitln(format_args!(
                "{}",
                match what {
                    "drain" => "drained: out of placement, still a member",
                    "undrain" => "undrained: back in placement",
                    _ => "leaving: the agent announces its departure and exits",
                }
            ));
        }
        Ok(())
    }

    /// `hearsay debug`: the agent's `/debug/view`.
    pub(crate) fn debug(&self) -> Result<(), String> {
        let body = self.call("GET", "/debug/view", None)?;
        self.print_json(&body);
        Ok(())
    }
}

/// `hearsay version`.
pub(crate) fn print_version(as_json: bool) {
    if as_json {
        let j = crate::http::version_json();
        emitln(format_args!(
            "{}",
            serde_json::to_string_pretty(&j).unwrap_or_else(|_| j.to_string())
        ));
    } else {
        emitln(format_args!("hearsay {}", hearsay::build::long_version()));
    }
}

/// Write to stdout; a closed pipe (`hearsay members | head -1`) is not an error worth a
/// panic, so write errors are ignored.
fn emit(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_fmt(args);
}

/// [`emit`] and a newline.
fn emitln(args: std::fmt::Arguments<'_>) {
    emit(format_args!("{args}\n"));
}

/// Why a request failed, in a few words.
fn reason(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => io.to_string(),
        ureq::Error::Timeout(_) => "timed out".into(),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        other => other.to_string(),
    }
    .replace('\n', " ")
}

/// A JSON scalar as table text.
fn text(j: &Json) -> String {
    match j {
        Json::String(s) => s.clone(),
        Json::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Columns padded to their widest cell; the last one is not padded.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let last = cells.len().saturating_sub(1);
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                l.push_str(cell);
            } else {
                l.push_str(cell);
                l.extend(std::iter::repeat_n(' ', w - cell.chars().count() + 2));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec(), &mut out);
    for row in &rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["ID", "ADDRESS", "STATUS"],
            vec![
                vec!["a".into(), "127.0.0.1:1".into(), "alive".into()],
                vec!["bbbb".into(), "x".into(), "dead".into()],
            ],
        );
        assert_eq!(
            t,
            "ID    ADDRESS      STATUS\n\
             a     127.0.0.1:1  alive\n\
             bbbb  x            dead\n"
        );
    }

    #[test]
    fn agent_addresses() {
        let args = |a: &str| ClientArgs {
            agent: a.into(),
            json: false,
        };
        assert_eq!(
            Client::new(&args("127.0.0.1:1")).unwrap().base,
            "http://127.0.0.1:1"
        );
        assert_eq!(
            Client::new(&args("http://h:2/")).unwrap().base,
            "http://h:2"
        );
        assert!(Client::new(&args("https://h:2")).is_err());
        assert!(Client::new(&args(" ")).is_err());
    }
}
