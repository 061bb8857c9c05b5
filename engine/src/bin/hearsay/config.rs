//! The agent's settings: defaults, then the TOML file, then flags; each value is checked
//! where it is read, and every error names its field in one line.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hearsay::codec::{MAX_KEYS, MAX_LABEL_LEN, MAX_METADATA_LEN};
use hearsay::node::Preset;
use hearsay::placement::Scheme;
use hearsay::runtime::BackendChoice;

/// Where the HTTP endpoint listens, if anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HttpSetting {
    /// No HTTP endpoint.
    Off,
    /// Listen here.
    On(SocketAddr),
}

/// The settings an agent runs with, every field resolved.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Settings {
    pub(crate) bind: SocketAddr,
    pub(crate) advertise: Option<SocketAddr>,
    pub(crate) join: Vec<String>,
    pub(crate) cluster: String,
    pub(crate) preset: Preset,
    pub(crate) shards: usize,
    pub(crate) http: HttpSetting,
    pub(crate) keys: Vec<[u8; 32]>,
    pub(crate) metadata: String,
    pub(crate) placement: Scheme,
    pub(crate) placement_seed: u64,
    pub(crate) backend: BackendChoice,
    pub(crate) event_log: Option<PathBuf>,
    pub(crate) event_log_max_bytes: u64,
    pub(crate) event_log_keep: usize,
    pub(crate) leave_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 7946)),
            advertise: None,
            join: Vec::new(),
            cluster: "hearsay".into(),
            preset: Preset::Lan,
            shards: 1,
            http: HttpSetting::On(
                crate::DEFAULT_HTTP
                    .parse()
                    .expect("the default HTTP address parses"),
            ),
            keys: Vec::new(),
            metadata: String::new(),
            placement: Scheme::Ring {
                points_per_node: 160,
            },
            placement_seed: 0,
            backend: BackendChoice::Auto,
            event_log: None,
            event_log_max_bytes: 10 * 1024 * 1024,
            event_log_keep: 5,
            leave_timeout: Duration::from_secs(5),
        }
    }
}

/// Values given in one place (the file or the flags); `None` leaves the field to the
/// layer below.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Overrides {
    pub(crate) bind: Option<SocketAddr>,
    pub(crate) advertise: Option<SocketAddr>,
    pub(crate) join: Option<Vec<String>>,
    pub(crate) cluster: Option<String>,
    pub(crate) preset: Option<Preset>,
    pub(crate) shards: Option<usize>,
    pub(crate) http: Option<HttpSetting>,
    pub(crate) keys: Option<Vec<[u8; 32]>>,
    pub(crate) metadata: Option<String>,
    pub(crate) placement: Option<Scheme>,
    pub(crate) placement_seed: Option<u64>,
    pub(crate) backend: Option<BackendChoice>,
    pub(crate) event_log: Option<PathBuf>,
    pub(crate) event_log_max_bytes: Option<u64>,
    pub(crate) event_log_keep: Option<usize>,
    pub(crate) leave_timeout: Option<Duration>,
}

impl Settings {
    /// These settings with every field `o` sets replaced.
    fn apply(mut self, o: &Overrides) -> Self {
        macro_rules! take {
            ($($f:ident),*) => { $( if let Some(v) = &o.$f { self.$f = v.clone(); } )* };
        }
        take!(
            bind,
            join,
            cluster,
            preset,
            shards,
            http,
            keys,
            metadata,
            placement,
            placement_seed,
            backend,
            event_log_max_bytes,
            event_log_keep,
            leave_timeout
        );
        if o.advertise.is_some() {
            self.advertise = o.advertise;
        }
        if o.event_log.is_some() {
            self.event_log = o.event_log.clone();
        }
        self
    }

    /// Checks that need every field; the error names the field.
    fn validate(&self) -> Result<(), String> {
        if self.cluster.len() > MAX_LABEL_LEN {
            return Err(format!(
                "invalid `cluster`: {} bytes, at most {MAX_LABEL_LEN}",
                self.cluster.len()
            ));
        }
        if self.metadata.len() > MAX_METADATA_LEN {
            return Err(format!(
                "invalid `metadata`: {} bytes, at most {MAX_METADATA_LEN}",
                self.metadata.len()
            ));
        }
        if self.keys.len() > MAX_KEYS {
            return Err(format!(
                "invalid `keys`: {} keys, at most {MAX_KEYS}",
                self.keys.len()
            ));
        }
        if self.bind.ip().is_unspecified() && self.advertise.is_none() && self.join.is_empty() {
            return Err(format!(
                "invalid `advertise`: required when `bind` is {} and there is no seed to find the local address from",
                self.bind.ip()
            ));
        }
        if let Some(a) = self.advertise {
            if a.ip().is_unspecified() || a.port() == 0 {
                return Err(format!(
                    "invalid `advertise`: {a} is not an address other members can reach"
                ));
            }
        }
        Ok(())
    }

    /// The address to advertise when none was given and the bind address is unspecified:
    /// the local address the kernel routes to the first seed that resolves (connecting a
    /// UDP socket sends nothing). `None` when the bound address itself will do.
    pub(crate) fn infer_advertise(&self, bound_port: u16) -> Result<Option<SocketAddr>, String> {
        if self.advertise.is_some() || !self.bind.ip().is_unspecified() {
            return Ok(self.advertise);
        }
        for seed in &self.join {
            let Ok(addrs) = seed.to_socket_addrs() else {
                continue;
            };
            for addr in addrs {
                let local: SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (IpAddr::from([0u16; 8]), 0).into()
                };
                let Ok(sock) = UdpSocket::bind(local) else {
                    continue;
                };
                if sock.connect(addr).is_ok() {
                    if let Ok(l) = sock.local_addr() {
                        if !l.ip().is_unspecified() {
                            return Ok(Some(SocketAddr::new(l.ip(), bound_port)));
                        }
                    }
                }
            }
        }
        Err(format!(
            "invalid `advertise`: required when `bind` is {}; no seed gave a local address",
            self.bind.ip()
        ))
    }
}

/// Defaults, then the file (if any), then the flags; validated.
pub(crate) fn load(file: Option<&Path>, flags: &Overrides) -> Result<Settings, String> {
    let mut settings = Settings::default();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        let from_file =
            parse_file(&text).map_err(|e| format!("config file {}: {e}", path.display()))?;
        settings = settings.apply(&from_file);
    }
    let settings = settings.apply(flags);
    settings.validate()?;
    Ok(settings)
}

/// Every field a config file may set.
const FIELDS: [&str; 16] = [
    "bind",
    "advertise",
    "join",
    "cluster",
    "preset",
    "shards",
    "http",
    "keys",
    "metadata",
    "placement",
    "placement_seed",
    "backend",
    "event_log",
    "event_log_max_bytes",
    "event_log_keep",
    "leave_timeout",
];

/// Parse a TOML config file. The error is one line naming the field (or the line of a
/// syntax error).
pub(crate) fn parse_file(text: &str) -> Result<Overrides, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let msg = e.message().trim().replace('\n', " ");
        match line {
            Some(l) => format!("line {l}: {msg}"),
            None => msg,
        }
    })?;
    let mut o = Overrides::default();
    for (key, value) in &table {
        let field = key.as_str();
        let bad = |reason: String| format!("invalid `{field}`: {reason}");
        let string = || match value {
            toml::Value::String(s) => Ok(s.clone()),
            other => Err(bad(format!(
                "expected a string, found {}",
                type_name(other)
            ))),
        };
        let strings = || match value {
            toml::Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(bad(format!(
                        "expected an array of strings, found an array holding {}",
                        type_name(other)
                    ))),
                })
                .collect::<Result<Vec<_>, _>>(),
            toml::Value::String(s) => Ok(vec![s.clone()]),
            other => Err(bad(format!(
                "expected an array of strings, found {}",
                type_name(other)
            ))),
        };
        let integer = |min: i64, max: i64| match value {
            toml::Value::Integer(i) if (min..=max).contains(i) => Ok(*i),
            toml::Value::Integer(i) => Err(bad(format!("{i} is not in {min}..={max}"))),
            other => Err(bad(format!(
                "expected an integer, found {}",
                type_name(other)
            ))),
        };
        match field {
            "bind" => o.bind = Some(parse_addr(&string()?).map_err(&bad)?),
            "advertise" => o.advertise = Some(parse_addr(&string()?).map_err(&bad)?),
            "join" => o.join = Some(strings()?),
            "cluster" => o.cluster = Some(string()?),
            "preset" => o.preset = Some(parse_preset(&string()?).map_err(&bad)?),
            "shards" => o.shards = Some(integer(1, 1024)? as usize),
            "http" => o.http = Some(parse_http(&string()?).map_err(&bad)?),
            "keys" => {
                o.keys = Some(
                    strings()?
                        .iter()
                        .map(|k| parse_key(k).map_err(&bad))
                        .collect::<Result<_, _>>()?,
                )
            }
            "metadata" => o.metadata = Some(string()?),
            "placement" => o.placement = Some(parse_scheme(&string()?).map_err(&bad)?),
            "placement_seed" => o.placement_seed = Some(integer(0, i64::MAX)? as u64),
            "backend" => o.backend = Some(parse_backend(&string()?).map_err(&bad)?),
            "event_log" => o.event_log = Some(PathBuf::from(string()?)),
            "event_log_max_bytes" => o.event_log_max_bytes = Some(integer(1024, i64::MAX)? as u64),
            "event_log_keep" => o.event_log_keep = Some(integer(0, 1000)? as usize),
            "leave_timeout" => {
                let secs = match value {
                    toml::Value::Integer(i) => *i as f64,
                    toml::Value::Float(f) => *f,
                    other => {
                        return Err(bad(format!(
                            "expected seconds (a number), found {}",
                            type_name(other)
                        )))
                    }
                };
                o.leave_timeout = Some(duration_from_secs(secs).map_err(&bad)?);
            }
            _ => {
                return Err(format!(
                    "unknown field `{field}` (expected one of {})",
                    FIELDS.join(", ")
                ))
            }
        }
    }
    Ok(o)
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a datetime",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an address (IP:PORT)"))
}

/// `lan`, `wan` or `local`.
pub(crate) fn parse_preset(s: &str) -> Result<Preset, String> {
    match s {
        "lan" => Ok(Preset::Lan),
        "wan" => Ok(Preset::Wan),
        "local" => Ok(Preset::Local),
        _ => Err(format!("{s:?} is not a preset (lan, wan, local)")),
    }
}

/// `auto`, `io-uring` or `portable`.
pub(crate) fn parse_backend(s: &str) -> Result<BackendChoice, String> {
    match s {
        "auto" => Ok(BackendChoice::Auto),
        "io-uring" | "io_uring" => Ok(BackendChoice::IoUring),
        "portable" => Ok(BackendChoice::Portable),
        _ => Err(format!("{s:?} is not a backend (auto, io-uring, portable)")),
    }
}

/// An address, or `off`.
pub(crate) fn parse_http(s: &str) -> Result<HttpSetting, String> {
    if s == "off" {
        return Ok(HttpSetting::Off);
    }
    parse_addr(s).map(HttpSetting::On)
}

/// A placement scheme by name (`ring:160`, `jump`, …).
pub(crate) fn parse_scheme(s: &str) -> Result<Scheme, String> {
    s.parse::<Scheme>().map_err(|e| e.to_string())
}

/// A 32-byte key as 64 hex digits.
pub(crate) fn parse_key(s: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "a key is 64 hex digits (32 bytes), got {} characters",
            s.len()
        ));
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .map_err(|_| "a key is 64 hex digits".to_string())?;
    }
    Ok(key)
}

/// Seconds, as a positive number of at most a day.
pub(crate) fn parse_duration_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    duration_from_secs(secs)
}

fn duration_from_secs(secs: f64) -> Result<Duration, String> {
    if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!("{secs} is not a number of seconds in (0, 86400]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn defaults_then_file_then_flags() {
        let file = parse_file(&format!(
            r#"
            bind = "127.0.0.1:7000"
            join = ["10.0.0.1:7946", "10.0.0.2:7946"]
            cluster = "prod"
            preset = "wan"
            shards = 2
            http = "127.0.0.1:9000"
            keys = ["{KEY}"]
            placement = "jump"
            event_log = "/var/log/hearsay/events.jsonl"
            event_log_keep = 3
            leave_timeout = 2.5
            "#
        ))
        .unwrap();
        let flags = Overrides {
            bind: Some("127.0.0.1:7100".parse().unwrap()),
            join: Some(vec!["10.0.0.9:7946".into()]),
            preset: Some(Preset::Local),
            http: Some(HttpSetting::Off),
            ..Overrides::default()
        };
        let s = Settings::default().apply(&file).apply(&flags);
        // Flags win...
        assert_eq!(s.bind, "127.0.0.1:7100".parse().unwrap());
        assert_eq!(s.join, ["10.0.0.9:7946"]);
        assert_eq!(s.preset, Preset::Local);
        assert_eq!(s.http, HttpSetting::Off);
        // ...the file fills what flags leave...
        assert_eq!(s.cluster, "prod");
        assert_eq!(s.shards, 2);
        assert_eq!(s.keys.len(), 1);
        assert_eq!(s.keys[0][..4], [0x00, 0x11, 0x22, 0x33]);
        assert_eq!(s.placement, Scheme::Jump);
        assert_eq!(
            s.event_log.as_deref(),
            Some(Path::new("/var/log/hearsay/events.jsonl"))
        );
        assert_eq!(s.event_log_keep, 3);
        assert_eq!(s.leave_timeout, Duration::from_millis(2500));
        // ...and defaults the rest.
        let d = Settings::default();
        assert_eq!(s.backend, d.backend);
        assert_eq!(s.event_log_max_bytes, d.event_log_max_bytes);
        assert_eq!(s.placement_seed, 0);
        assert_eq!(s.advertise, None);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn no_file_no_flags_is_the_defaults() {
        let s = load(None, &Overrides::default()).unwrap_err();
        // The default bind address is unspecified and there is no seed.
        assert!(s.contains("`advertise`"), "{s}");
        let flags = Overrides {
            bind: Some("127.0.0.1:7946".parse().unwrap()),
            ..Overrides::default()
        };
        let s = load(None, &flags).unwrap();
        assert_eq!(
            s,
            Settings {
                bind: "127.0.0.1:7946".parse().unwrap(),
                ..Settings::default()
            }
        );
    }

    #[test]
    fn file_errors_name_the_field_in_one_line() {
        for (text, needle) in [
            (
                "shards = \"x\"",
                "`shards`: expected an integer, found a string",
            ),
            ("shards = 0", "`shards`: 0 is not in 1..=1024"),
            ("bindd = \"1.2.3.4:5\"", "unknown field `bindd`"),
            (
                "bind = \"nowhere\"",
                "`bind`: \"nowhere\" is not an address",
            ),
            ("preset = \"fast\"", "`preset`: \"fast\" is not a preset"),
            ("keys = [\"abc\"]", "`keys`: a key is 64 hex digits"),
            ("join = [1, 2]", "`join`: expected an array of strings"),
            (
                "placement = \"ring:x\"",
                "`placement`: unknown placement scheme",
            ),
            ("backend = \"dpdk\"", "`backend`"),
            ("leave_timeout = -1", "`leave_timeout`"),
            ("event_log_max_bytes = 10", "`event_log_max_bytes`"),
            ("http = 80", "`http`: expected a string, found an integer"),
            ("shards = 2\nbind = [", "line 2"),
        ] {
            let e = parse_file(text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(!e.contains('\n'), "{text:?}: {e:?}");
        }
    }

    #[test]
    fn merged_values_are_validated() {
        let with = |o: Overrides| Settings::default().apply(&o).validate();
        let e = with(Overrides {
            bind: Some("127.0.0.1:1".parse().unwrap()),
            cluster: Some("x".repeat(65)),
            ..Overrides::default()
        })
        .unwrap_err();
        assert!(e.contains("`cluster`"), "{e}");
        let e = with(Overrides {
            bind: Some("127.0.0.1:1".parse().unwrap()),
            metadata: Some("m".repeat(2000)),
            ..Overrides::default()
        })
        .unwrap_err();
        assert!(e.contains("`metadata`"), "{e}");
        let e = with(Overrides {
            bind: Some("127.0.0.1:1".parse().unwrap()),
            advertise: Some("0.0.0.0:7946".parse().unwrap()),
            ..Overrides::default()
        })
        .unwrap_err();
        assert!(e.contains("`advertise`"), "{e}");
        // An unspecified bind address with a seed is fine: the seed's route tells the
        // address.
        assert!(with(Overrides {
            join: Some(vec!["127.0.0.1:7946".into()]),
            ..Overrides::default()
        })
        .is_ok());
    }

    #[test]
    fn the_address_routed_to_a_seed_is_advertised() {
        let s = Settings {
            join: vec!["127.0.0.1:7946".into()],
            ..Settings::default()
        };
        assert_eq!(
            s.infer_advertise(7001).unwrap(),
            Some("127.0.0.1:7001".parse().unwrap())
        );
        let s = Settings {
            bind: "127.0.0.1:7001".parse().unwrap(),
            ..Settings::default()
        };
        assert_eq!(s.infer_advertise(7001).unwrap(), None);
    }

    #[test]
    fn value_parsers() {
        assert_eq!(parse_key(KEY).unwrap()[31], 0xff);
        assert!(parse_key(&KEY[1..]).is_err());
        assert!(parse_key(&KEY.replace('0', "g")).is_err());
        assert_eq!(parse_http("off").unwrap(), HttpSetting::Off);
        assert_eq!(
            parse_http("127.0.0.1:1").unwrap(),
            HttpSetting::On("127.0.0.1:1".parse().unwrap())
        );
        assert_eq!(parse_backend("io-uring").unwrap(), BackendChoice::IoUring);
        assert_eq!(
            parse_scheme("ring:100").unwrap(),
            Scheme::Ring {
                points_per_node: 100
            }
        );
        assert_eq!(
            parse_duration_secs("0.5").unwrap(),
            Duration::from_millis(500)
        );
        assert!(parse_duration_secs("0").is_err());
        assert!(parse_duration_secs("nan").is_err());
    }
}
